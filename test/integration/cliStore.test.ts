import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Store } from '../../agent/store/database.js';
import { latestVersion, migrate } from '../../agent/store/migrate.js';
import { MIGRATIONS } from '../../agent/store/migrations/index.js';
import { MAIN, runCli, tempDir } from '../helpers/daemon.js';
import { NOT_ROOT_REASON, otherUser } from '../helpers/otherUser.js';

const LATEST = latestVersion(MIGRATIONS);
const silent = pino({ level: 'silent' });
const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** Commands that read the database when the daemon does not answer (through runApi's fallback, or always). */
const READS = [['devices', 'list'], ['devices', 'token', 'list'], ['tokens', 'list'], ['audit'], ['sync', 'status'], ['opcua', 'push-status']];

describe('the CLI on the database with the daemon down', () => {
  let tmp: ReturnType<typeof tempDir>;
  let data: string;
  let db: string;
  let config: string;
  beforeEach(() => {
    tmp = tempDir();
    data = join(tmp.dir, 'data');
    db = join(data, 'edge-agent.db');
    // Laid out as a checkout: the default configuration is ./config/edge-agent.yaml.
    mkdirSync(join(tmp.dir, 'config'));
    config = join(tmp.dir, 'config', 'edge-agent.yaml');
    writeFileSync(config, `agent:\n  id: gw-store\n  dataDir: ${data}\nhttp:\n  port: 0\n`);
  });
  afterEach(() => tmp.cleanup());

  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  /** The database as the daemon leaves it: created, migrated to `version`, closed. */
  const makeDatabase = (version = LATEST) => {
    mkdirSync(data, { mode: 0o700 });
    const sqlite = new BetterSqlite3(db);
    sqlite.pragma('journal_mode = WAL');
    migrate(
      sqlite,
      MIGRATIONS.filter((m) => m.version <= version),
      silent,
    );
    sqlite.close();
  };

  it('never creates a database for a read or a --local change: it names the path and the configuration, and exits 66', async () => {
    // Run from the checkout-like directory without --config: the database it would have created is ./data/edge-agent.db.
    const listed = await runCli(['devices', 'list'], { cwd: tmp.dir });
    expect(listed.code, listed.stderr).toBe(66);
    expect(listed.stdout).toBe('');
    expect(listed.stderr).toContain(`STORE_MISSING: database ${db} does not exist; the configuration ${config} puts it there`);
    expect(listed.stderr).toContain('the daemon has not started with it yet');
    for (const args of [
      ['opcua', 'push-status'],
      ['devices', 'token', 'list'],
      ['users', 'add', 'anna', '--role', 'viewer', '--local'],
      ['devices', 'approve', 'pump-1', '--local'],
      ['devices', 'token', 'revoke', 'feedfacecafe', '--local'],
    ]) {
      const r = await cli(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(66);
      expect(r.stderr, args.join(' ')).toContain(`STORE_MISSING: database ${db} does not exist`);
    }
    const json = await cli('users', 'list', '--json');
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: 'STORE_MISSING' } });
    expect(existsSync(data)).toBe(false);
  });

  it('reads an up-to-date database without changing a byte of it', async () => {
    makeDatabase();
    const before = sha256(db);
    for (const args of READS) {
      const r = await cli(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    }
    const shown = await cli('devices', 'show', 'pump-1');
    expect(shown.stderr).toContain('read from the database directly');
    expect(shown.stderr).toContain('no device mqtt:pump-1 in the inventory');
    expect(sha256(db)).toBe(before);
  });

  it('refuses to read a database of an older schema (exit 69) and leaves it unmigrated', async () => {
    makeDatabase(LATEST - 1);
    const before = sha256(db);
    for (const args of [
      ['devices', 'list'],
      ['devices', 'token', 'list'],
    ]) {
      const r = await cli(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(69);
      expect(r.stderr).toContain(`STORE_NOT_MIGRATED: database ${db} has schema version ${LATEST - 1}, older than this edge-agent's (${LATEST})`);
      expect(r.stderr).toContain('the daemon migrates it when it starts');
    }
    const sqlite = new BetterSqlite3(db, { readonly: true });
    expect(sqlite.pragma('user_version', { simple: true })).toBe(LATEST - 1);
    sqlite.close();
    expect(sha256(db)).toBe(before);
  });

  it('refuses to read a database of a newer schema with exit 65, leaving it as it was', async () => {
    makeDatabase();
    const sqlite = new BetterSqlite3(db);
    sqlite.pragma(`user_version = ${LATEST + 1}`);
    sqlite.close();
    const before = sha256(db);
    const r = await cli('users', 'list');
    expect(r.code, r.stderr).toBe(65);
    expect(r.stderr).toContain(`STORE_TOO_NEW: database schema version ${LATEST + 1} is newer than this edge-agent`);
    expect(sha256(db)).toBe(before);
  });

  // Skipped only in a run without root (a developer's): switching users needs root. As root (CI) it always runs,
  // and a machine without the nobody account or setpriv fails it (otherUser throws).
  const other = otherUser();
  if (!other) process.stderr.write(`cliStore.test.ts: one test skipped: ${NOT_ROOT_REASON}\n`);
  it.skipIf(!other)(
    'as another user: a clear refusal where SQLite cannot create the -shm file, and a read by root leaves WAL files the owner can use',
    async () => {
      makeDatabase();
      const store = Store.open({ path: db, busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' }, silent).store;
      store.close();
      // Readable by everyone, the directory writable by root only: a non-root reader cannot create edge-agent.db-shm.
      for (const path of [tmp.dir, join(tmp.dir, 'config'), data]) chmodSync(path, 0o755);
      chmodSync(config, 0o644);
      chmodSync(db, 0o644);
      expect(existsSync(`${db}-shm`)).toBe(false);
      const asNobody = (args: string[]) =>
        new Promise<{ code: number | null; stderr: string }>((resolve) => {
          try {
            execFileSync('setpriv', [`--reuid=${other!.uid}`, `--regid=${other!.gid}`, '--clear-groups', process.execPath, MAIN, ...args, '--config', config], {
              cwd: tmp.dir,
              stdio: ['ignore', 'pipe', 'pipe'],
            });
            resolve({ code: 0, stderr: '' });
          } catch (err) {
            const e = err as { status: number | null; stderr: Buffer };
            resolve({ code: e.status, stderr: e.stderr.toString() });
          }
        });
      const refused = await asNobody(['devices', 'list']);
      expect(refused.code, refused.stderr).toBe(77);
      expect(refused.stderr).toContain(`STORE_ACCESS_DENIED: cannot read database ${db}`);
      expect(refused.stderr).toContain(`SQLite must create ${db}-shm beside it, and this user may not write in ${data}`);

      // Root reads a database its daemon's user owns: the WAL files SQLite creates for the read belong to that user.
      chownSync(data, other!.uid, other!.gid);
      chownSync(db, other!.uid, other!.gid);
      expect((await cli('devices', 'list')).code).toBe(0);
      for (const file of [`${db}-shm`, `${db}-wal`].filter((f) => existsSync(f))) expect(statSync(file).uid, file).toBe(other!.uid);
    },
  );
});
