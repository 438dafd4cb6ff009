import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../agent/config/load.js';
import { Store } from '../../agent/store/database.js';
import { runCli, tempDir, writeConfig } from '../helpers/daemon.js';

describe('edge-agent users and tokens (on the gateway, against the database)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let config: string;
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  // Changes without the daemon are made on the database with --local.
  const local = (...args: string[]) => cli(...args, '--local');
  beforeAll(() => {
    tmp = tempDir();
    config = writeConfig(tmp.dir, ['agent:', '  id: gw-users', `  dataDir: ${join(tmp.dir, 'data')}`, ''].join('\n'));
    // The database as the daemon creates it at its first start: the CLI never creates one.
    Store.open(loadConfig({ file: config }).config.store, pino({ level: 'silent' })).store.close();
  });
  afterAll(() => tmp.cleanup());

  it('adds users with a role, refuses a bad role or name and a second user of the same name', async () => {
    expect((await local('users', 'add', 'tech-a', '--role', 'technician')).code).toBe(0);
    const badRole = await local('users', 'add', 'tech-b', '--role', 'root');
    expect(badRole.code).toBe(64);
    expect(badRole.stderr).toContain('--role takes admin, technician, viewer');
    expect((await local('users', 'add', 'bad name', '--role', 'viewer')).code).toBe(64);
    expect((await local('users', 'add', 'tech-a', '--role', 'admin')).stderr).toContain('exists already');
    const list = JSON.parse((await cli('users', 'list', '--json')).stdout) as { name: string; role: string }[];
    expect(list).toEqual([expect.objectContaining({ name: 'tech-a', role: 'technician' })]);
  });

  it('shows a token once: never in the list, never again', async () => {
    const made = await local('tokens', 'create', '--user', 'tech-a', '--expires', '90d', '--json');
    expect(made.code, made.stderr).toBe(0);
    const { id, secret } = JSON.parse(made.stdout) as { id: number; secret: string };
    expect(secret).toMatch(/^eat_[A-Za-z0-9_-]{43}$/);
    const list = await cli('tokens', 'list', '--json');
    expect(list.stdout).not.toContain(secret);
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ id, user: 'tech-a', label: 'cli' })]);
    expect((await local('tokens', 'revoke', String(id))).stdout).toContain(`token ${id} revoked`);
    expect((await cli('tokens', 'list')).stdout).toMatch(new RegExp(`^${id}\\ttech-a\\tcli\\trevoked`, 'm'));
    expect((await local('tokens', 'create', '--user', 'nobody')).stderr).toContain('no user nobody');
    expect((await local('tokens', 'create', '--user', 'tech-a', '--expires', 'soon')).code).toBe(64);
  });

  it('disables a user', async () => {
    expect((await local('users', 'disable', 'tech-a')).code).toBe(0);
    expect((await cli('users', 'list')).stdout).toMatch(/^tech-a\ttechnician\tlocal\tdisabled /m);
    expect((await local('tokens', 'create', '--user', 'tech-a')).stderr).toContain('is disabled');
  });

  it('keeps read commands working with the daemon down, saying so; a change needs the daemon or --local (audited)', async () => {
    const list = await cli('devices', 'list');
    expect(list.code, list.stderr).toBe(0);
    expect(list.stderr).toMatch(/the daemon is not running \(nothing answers at http:\/\/127\.0\.0\.1:\d+\): read from the database directly/);
    expect(list.stdout).toBe('no devices\n');
    expect((await cli('certs', 'crl')).code).toBe(0);
    for (const args of [
      ['devices', 'set', 'mqtt:pump-1', '--asset-tag', 'A-1'],
      ['certs', 'revoke', 'ab12', '--reason', 'superseded'],
      ['discover'],
      ['users', 'add', 'tech-z', '--role', 'viewer'],
      ['sync', 'retry-dead-letters'],
    ]) {
      const r = await cli(...args);
      expect(r.code, args.join(' ')).toBe(69);
      expect(r.stderr).toContain('DAEMON_UNAVAILABLE: the daemon is not running');
    }
    expect((await cli('devices', 'set', 'mqtt:pump-1', '--asset-tag', 'A-1', '--local')).code).toBe(64);
    expect((await cli('sync', 'retry-dead-letters', '--local')).stdout).toBe('0 item(s) queued again\n');
    const audit = JSON.parse((await cli('audit', '--json')).stdout) as { actor: string; role: string; action: string; target: string }[];
    expect(audit.map((e) => `${e.role} ${e.action} ${e.target}`)).toEqual([
      'local sync.retryDeadLetters sync',
      'local user.disable tech-a',
      expect.stringMatching(/^local token.revoke token \d+$/),
      expect.stringMatching(/^local token.create token \d+$/),
      'local user.add tech-a',
    ]);
    expect(audit.every((e) => e.actor.startsWith('local:'))).toBe(true);
    // The commands' own variables are not configuration keys: setting them is no configuration error.
    const withVars = await runCli(['devices', 'list', '--config', config], {
      env: { EDGE_AGENT_TOKEN: `eat_${'C'.repeat(43)}`, EDGE_AGENT_TOKEN_FILE: '/nonexistent/token', EDGE_AGENT_CA: '/nonexistent/ca.pem' },
    });
    expect(withVars.code, withVars.stderr).toBe(0);
  }, 120_000);

  it('makes an enrollment token like the other changes: through the daemon, or with --local on the database (audited); takes --token', async () => {
    const down = await cli('devices', 'token', 'create', '--token', `eat_${'D'.repeat(43)}`);
    expect(down.code, down.stderr).toBe(69);
    expect(down.stderr).toContain('DAEMON_UNAVAILABLE: the daemon is not running');
    expect(down.stderr).toContain('--local makes the change on the database');
    const made = await local('devices', 'token', 'create', '--uses', '2', '--expires', '30m', '--json');
    expect(made.code, made.stderr).toBe(0);
    const { token, record } = JSON.parse(made.stdout) as { token: string; record: { id: string; maxUses: number } };
    expect(record.maxUses).toBe(2);
    const audit = JSON.parse((await cli('audit', '--json')).stdout) as {
      actor: string;
      role: string;
      action: string;
      target: string;
      details: Record<string, unknown>;
    }[];
    expect(audit.find((e) => e.target === `enrollment token ${record.id}`)).toMatchObject({
      role: 'local',
      action: 'enrollmentToken.create',
      details: { maxUses: 2 },
    });
    expect(JSON.stringify(audit)).not.toContain(token);
    expect((await local('devices', 'token', 'create', '--expires', '400d')).code).toBe(64);

    // The list reads the database when the daemon is down; a revocation needs the daemon or --local, and is audited.
    const listed = await cli('devices', 'token', 'list');
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stderr).toContain('read from the database directly');
    expect(listed.stdout).toMatch(new RegExp(`^${record.id}\t0/2\tuntil `, 'm'));
    const notLocal = await cli('devices', 'token', 'revoke', record.id);
    expect(notLocal.code, notLocal.stderr).toBe(69);
    expect(notLocal.stderr).toContain('--local makes the change on the database');
    const revoked = await local('devices', 'token', 'revoke', record.id);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toBe(`token ${record.id} revoked\n`);
    expect((await cli('devices', 'token', 'list')).stdout).toMatch(new RegExp(`^${record.id}\t0/2\trevoked\t`, 'm'));
    const again = await local('devices', 'token', 'revoke', record.id);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`is already revoked`);
    expect((await local('devices', 'token', 'revoke', 'feedfacecafe')).code).toBe(64);
    const entries = JSON.parse((await cli('audit', '--json')).stdout) as {
      actor: string;
      role: string;
      action: string;
      target: string;
      details: Record<string, unknown>;
    }[];
    expect(entries.filter((e) => e.action === 'enrollmentToken.revoke')).toEqual([
      expect.objectContaining({
        role: 'local',
        actor: expect.stringMatching(/^local:/),
        target: `enrollment token ${record.id}`,
        details: expect.objectContaining({ maxUses: 2 }),
      }),
    ]);
  }, 120_000);

  it('offers --local only on commands that have a way to work without the daemon', async () => {
    for (const command of [['discover'], ['devices', 'set'], ['certs', 'revoke']]) {
      const help = await runCli([...command, '--help']);
      expect(help.code, command.join(' ')).toBe(0);
      expect(help.stdout, command.join(' ')).toContain('--token <token>');
      expect(help.stdout, command.join(' ')).not.toContain('--local');
    }
    for (const command of [
      ['devices', 'token', 'create'],
      ['devices', 'approve'],
      ['users', 'add'],
      ['sync', 'now'],
    ]) {
      expect((await runCli([...command, '--help'])).stdout, command.join(' ')).toContain('--local');
    }
    const discover = await cli('discover', '--local');
    expect(discover.code).toBe(64);
    expect(discover.stderr).toContain("unknown option '--local'");
  }, 120_000);
});
