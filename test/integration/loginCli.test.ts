import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSessionFile } from '../../agent/cli/sessionFile.js';
import { Daemon, runCli, tempDir, writeConfig } from '../helpers/daemon.js';

describe('edge-agent login, logout and whoami against a real daemon without a directory', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let sessionFile: string;
  const cli = (args: string[], options: { env?: NodeJS.ProcessEnv; input?: string } = {}) =>
    runCli([...args, '--config', config], { ...options, env: { EDGE_AGENT_SESSION_FILE: sessionFile, ...options.env } });
  beforeAll(async () => {
    tmp = tempDir();
    config = writeConfig(tmp.dir);
    sessionFile = join(tmp.dir, 'home', 'session');
    daemon = Daemon.start(config);
    await daemon.ready();
  }, 120_000);
  afterAll(async () => {
    await daemon?.dispose();
    tmp.cleanup();
  });

  it('login with the password on standard input: directory logins are off, exit 64, and no session file', async () => {
    const r = await cli(['login', '--user', 'x', '--password-stdin'], { input: 'not-the-password\n' });
    expect(r.code, r.stderr).toBe(64);
    expect(r.stderr).toContain('DIRECTORY_OFF');
    expect(r.stderr).not.toContain('not-the-password');
    expect((await cli(['logout'])).stdout).toBe('not logged in\n');
  });

  it('login refuses an empty password line and a standard input that is no terminal without --password-stdin', async () => {
    const empty = await cli(['login', '--user', 'x', '--password-stdin'], { input: '\n' });
    expect(empty.code).toBe(64);
    expect(empty.stderr).toContain('empty');
    const noTty = await cli(['login', '--user', 'x'], { input: 'pw\n' });
    expect(noTty.code).toBe(64);
    expect(noTty.stderr).toContain('--password-stdin');
  });

  it('whoami with the local admin token: source local, role admin, whole plant, and where the token came from', async () => {
    const token = readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim();
    const r = await cli(['whoami'], { env: { EDGE_AGENT_TOKEN: token } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^user +admin$/m);
    expect(r.stdout).toMatch(/^source +local$/m);
    expect(r.stdout).toMatch(/^role +admin$/m);
    expect(r.stdout).toMatch(/^scope +whole plant$/m);
    expect(r.stdout).toMatch(/^credential +\$EDGE_AGENT_TOKEN$/m);
    const json = JSON.parse((await cli(['whoami', '--json'])).stdout) as { user: { name: string }; credential: { source: string } };
    expect(json).toMatchObject({ user: { name: 'admin', role: 'admin' }, credential: { source: 'admin.token' } });
    expect(JSON.stringify(json)).not.toContain(token);
  });

  it('logout without a session file says not logged in, exit 0', async () => {
    const r = await cli(['logout']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('not logged in\n');
  });

  it('logout of a session the daemon no longer knows still deletes the file and says so; an expired one is passed over with a hint', async () => {
    const url = readFileSync(join(tmp.dir, 'data', 'api.url'), 'utf8').trim();
    const keep = (expiresAt: string) => writeSessionFile(sessionFile, { token: `eas_${'A'.repeat(43)}`, user: 'x', role: 'viewer', expiresAt, url });
    keep(new Date(Date.now() + 3_600_000).toISOString());
    const r = await cli(['logout']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`the session of x had already ended; ${sessionFile} removed\n`);
    expect(existsSync(sessionFile)).toBe(false);

    keep('2020-01-01T00:00:00.000Z');
    const who = await cli(['whoami']);
    expect(who.code, who.stderr).toBe(0);
    expect(who.stderr).toContain('the session of x ended at 2020-01-01T00:00:00.000Z: edge-agent login to start another');
    expect(who.stdout).toMatch(/^credential +admin\.token/m);
    rmSync(sessionFile);
  });

  it('users list shows the source column', async () => {
    const r = await cli(['users', 'list']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^admin\tadmin\tlocal$/m);
  });
});
