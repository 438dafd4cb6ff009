import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

  it('users list shows the source column', async () => {
    const r = await cli(['users', 'list']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^admin\tadmin\tlocal$/m);
  });
});
