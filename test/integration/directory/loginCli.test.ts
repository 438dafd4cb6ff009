import { readFileSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { type SambaDc, sambaSkipReason, startSambaDc } from '../../helpers/samba.js';

const PASSWORD = 'Line-Pass1!';

if (sambaSkipReason) console.warn(`skipping the edge-agent login tests against Active Directory: ${sambaSkipReason}`);

describe.skipIf(sambaSkipReason)('edge-agent login, whoami, users list and logout against a Samba AD DC and a real daemon', () => {
  let dc: SambaDc;
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let sessionFile: string;
  const cli = (args: string[], options: { env?: NodeJS.ProcessEnv; input?: string } = {}) =>
    runCli([...args, '--config', config], { ...options, env: { EDGE_AGENT_SESSION_FILE: sessionFile, ...options.env } });

  beforeAll(async () => {
    dc = await startSambaDc({ address: '127.0.60.7' });
    await dc.addUser('line1', PASSWORD);
    await dc.addGroup('Line-Crew');
    await dc.addMembers('Line-Crew', ['line1']);
    tmp = tempDir();
    sessionFile = join(tmp.dir, 'home', 'edge-agent', 'session');
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-login',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'auth:',
        '  directory:',
        '    enabled: true',
        `    url: ${dc.url}`,
        `    caFile: ${dc.caFile}`,
        `    baseDn: ${dc.baseDn}`,
        `    bindDn: ${dc.serviceDn}`,
        `    bindPasswordFile: ${dc.servicePasswordFile}`,
        '    groups:',
        '      - { group: Line-Crew, role: technician, scope: [{ site: plant-1, line: L3 }] }',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    await daemon.ready();
  }, 240_000);

  afterAll(async () => {
    await daemon?.dispose();
    await dc?.stop();
    tmp?.cleanup();
  });

  it('refuses a wrong password with exit 77 and keeps no session', async () => {
    const r = await cli(['login', '--user', 'line1', '--password-stdin'], { input: 'Wrong-Pass1!\n' });
    expect(r.code, r.stderr).toBe(77);
    expect(r.stderr).toContain('LOGIN_FAILED');
    expect(existsSync(sessionFile)).toBe(false);
  });

  it('logs in, keeps the session 0600 in a 0700 directory, and the other commands act as the directory user', async () => {
    const r = await cli(['login', '--user', 'line1', '--password-stdin'], { input: `${PASSWORD}\n` });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^logged in as line1 \\(technician, site plant-1 line L3\\) until .+; session kept in ${sessionFile}\\n$`));
    expect(r.stdout + r.stderr).not.toContain(PASSWORD);
    expect(statSync(sessionFile).mode & 0o777).toBe(0o600);
    expect(statSync(join(tmp.dir, 'home', 'edge-agent')).mode & 0o777).toBe(0o700);
    const kept = JSON.parse(readFileSync(sessionFile, 'utf8')) as Record<string, string>;
    expect(kept).toMatchObject({ user: 'line1', role: 'technician', url: readFileSync(join(tmp.dir, 'data', 'api.url'), 'utf8').trim() });
    expect(kept.token).toMatch(/^eas_[A-Za-z0-9_-]{43}$/);
    expect(JSON.stringify(kept)).not.toContain(PASSWORD);

    const who = await cli(['whoami']);
    expect(who.code, who.stderr).toBe(0);
    expect(who.stdout).toMatch(/^user +line1$/m);
    expect(who.stdout).toMatch(/^source +directory$/m);
    expect(who.stdout).toMatch(/^role +technician$/m);
    expect(who.stdout).toMatch(/^scope +site plant-1 line L3$/m);
    expect(who.stdout).toMatch(new RegExp(`^credential +session file of edge-agent login ${sessionFile}$`, 'm'));

    const admin = readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim();
    const users = await cli(['users', 'list'], { env: { EDGE_AGENT_TOKEN: admin } });
    expect(users.code, users.stderr).toBe(0);
    expect(users.stdout).toMatch(/^line1\ttechnician\tdirectory$/m);
    expect(users.stdout).toMatch(/^admin\tadmin\tlocal$/m);
  });

  it('ends the session it replaces when the user logs in again', async () => {
    const before = (JSON.parse(readFileSync(sessionFile, 'utf8')) as { token: string }).token;
    const again = await cli(['login', '--user', 'line1', '--password-stdin'], { input: `${PASSWORD}\n` });
    expect(again.code, again.stderr).toBe(0);
    const after = (JSON.parse(readFileSync(sessionFile, 'utf8')) as { token: string }).token;
    expect(after).not.toBe(before);
    expect((await cli(['whoami'], { env: { EDGE_AGENT_TOKEN: before } })).code).toBe(77);
    expect((await cli(['whoami'])).code).toBe(0);
  });

  it('logs out: the session ends on the daemon and its file is deleted; a second logout is not logged in', async () => {
    const token = (JSON.parse(readFileSync(sessionFile, 'utf8')) as { token: string }).token;
    const r = await cli(['logout']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`logged out: the session of line1 has ended; ${sessionFile} removed\n`);
    expect(existsSync(sessionFile)).toBe(false);
    const refused = await cli(['whoami'], { env: { EDGE_AGENT_TOKEN: token } });
    expect(refused.code).toBe(77);
    expect((await cli(['logout'])).stdout).toBe('not logged in\n');
  });
});
