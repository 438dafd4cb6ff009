import { execFile } from 'node:child_process';
import { chmodSync, chownSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import BetterSqlite3 from 'better-sqlite3';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../agent/config/load.js';
import { Store } from '../../agent/store/database.js';
import { MAIN, runCli, tempDir, writeConfig } from '../helpers/daemon.js';
import { NOT_ROOT_REASON, otherUser } from '../helpers/otherUser.js';

const exec = promisify(execFile);

// Skipped only in a run without root (a developer's): switching users needs root. As root (CI) it always runs,
// and a machine without the nobody account or setpriv fails it (otherUser throws).
const nobody = otherUser();
if (!nobody) process.stderr.write(`localActor.test.ts skipped: ${NOT_ROOT_REASON}\n`);

describe.skipIf(!nobody)('the actor of --local changes comes from the real uid, not from the environment', () => {
  let tmp: ReturnType<typeof tempDir>;
  let config: string;
  let db: string;
  beforeAll(() => {
    tmp = tempDir();
    config = writeConfig(tmp.dir, ['agent:', '  id: gw-actor', `  dataDir: ${join(tmp.dir, 'data')}`, 'http:', '  port: 0', ''].join('\n'));
    const store = loadConfig({ file: config }).config.store;
    db = store.path;
    Store.open(store, pino({ level: 'silent' })).store.close();
  });
  afterAll(() => tmp.cleanup());

  /** `users add <name> --local` with these variables; resolves with the audit actor and the user's created_by. */
  const addUser = async (name: string, env: NodeJS.ProcessEnv, prefix: string[] = []) => {
    if (prefix.length === 0) {
      const r = await runCli(['users', 'add', name, '--role', 'viewer', '--local', '--config', config], { env });
      expect(r.code, r.stderr).toBe(0);
    } else {
      await exec(prefix[0]!, [...prefix.slice(1), process.execPath, MAIN, 'users', 'add', name, '--role', 'viewer', '--local', '--config', config], {
        env: { PATH: process.env.PATH, ...env },
        cwd: tmp.dir,
      });
    }
    const sqlite = new BetterSqlite3(db, { readonly: true });
    try {
      const audit = sqlite.prepare("SELECT actor FROM audit_log WHERE action = 'user.add' AND target = ?").get(name) as { actor: string };
      const user = sqlite.prepare('SELECT created_by FROM users WHERE name = ?').get(name) as { created_by: string };
      return { actor: audit.actor, createdBy: user.created_by };
    } finally {
      sqlite.close();
    }
  };

  it('as root, a SUDO_USER that is no account, or does not match SUDO_UID, is not believed', async () => {
    expect(await addUser('x1', { SUDO_USER: 'tech-anna', SUDO_UID: String(nobody!.uid), USER: 'tech-anna' })).toEqual({
      actor: 'local:root',
      createdBy: 'local:root',
    });
    expect((await addUser('x2', { SUDO_USER: nobody!.name, SUDO_UID: '4242424' })).actor).toBe('local:root');
  });

  it('as root through sudo (SUDO_UID is the account SUDO_USER names), both are recorded', async () => {
    expect(await addUser('x3', { SUDO_USER: nobody!.name, SUDO_UID: String(nobody!.uid) })).toEqual({
      actor: `local:root (sudo: ${nobody!.name})`,
      createdBy: `local:root (sudo: ${nobody!.name})`,
    });
  });

  it('as another user, that user, whatever SUDO_USER and USER say', async () => {
    // The other user runs on the database as the agent's user would: it owns the data directory.
    const data = join(tmp.dir, 'data');
    chmodSync(tmp.dir, 0o755);
    chmodSync(config, 0o644);
    for (const f of [data, ...readdirSync(data).map((n) => join(data, n))]) chownSync(f, nobody!.uid, nobody!.gid);
    const setpriv = ['setpriv', `--reuid=${nobody!.uid}`, `--regid=${nobody!.gid}`, '--clear-groups'];
    expect((await addUser('x4', { SUDO_USER: 'root', SUDO_UID: '0', USER: 'root' }, setpriv)).actor).toBe(`local:${nobody!.name}`);
  });
});
