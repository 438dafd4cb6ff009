import { readFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PERMISSIONS, type Permission } from '../../agent/api/auth.js';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import { Daemon, runCli, tempDir, writeConfig } from '../helpers/daemon.js';

/** Every API route and the permission it needs: the authorisation matrix below walks all of them. */
const ROUTES: { path: string; permission: Permission }[] = [
  { path: '/api/v1/devices', permission: 'devices.read' },
  { path: '/api/v1/devices/mqtt:meter-1', permission: 'devices.read' },
  { path: '/api/v1/sync/status', permission: 'sync.read' },
];

describe('the local API: tokens, roles and hardening (real daemon)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let port: number;
  const tokens: Record<string, string> = {};
  const get = (path: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; body: { code?: string; [k: string]: unknown } }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as { code?: string } }));
      });
      req.on('error', reject);
      req.end();
    });
  const token = async (user: string, role: string, expires?: string) => {
    if ((await runCli(['users', 'list', '--config', config])).stdout.split('\n').every((l) => !l.startsWith(`${user}\t`))) {
      expect((await runCli(['users', 'add', user, '--role', role, '--config', config])).code).toBe(0);
    }
    const made = await runCli(['tokens', 'create', '--user', user, '--json', ...(expires ? ['--expires', expires] : []), '--config', config]);
    expect(made.code, made.stderr).toBe(0);
    return JSON.parse(made.stdout) as { id: number; secret: string };
  };

  beforeAll(async () => {
    tmp = tempDir();
    config = writeConfig(tmp.dir, ['agent:', '  id: gw-api', `  dataDir: ${join(tmp.dir, 'data')}`, 'http:', '  port: 0', 'mqtt:', '  enabled: false', 'opcua:', '  enabled: false', ''].join('\n'));
    daemon = Daemon.start(config);
    port = Number(new URL(await daemon.ready()).port);
    const { store } = Store.open({ path: join(tmp.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' }, pino({ level: 'silent' }));
    store.transaction(() => new DeviceRepository(store).apply({ protocol: 'mqtt', name: 'meter-1', to: 'discovered', cause: 'test', actor: 'test' }));
    store.close();
    tokens.admin = readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim();
    tokens.technician = (await token('tech-a', 'technician')).secret;
    tokens.viewer = (await token('viewer-b', 'viewer')).secret;
    tokens.expired = (await token('viewer-b', 'viewer', '0h')).secret;
    const revoked = await token('viewer-b', 'viewer');
    await runCli(['tokens', 'revoke', String(revoked.id), '--config', config]);
    tokens.revoked = revoked.secret;
  }, 60_000);
  afterAll(async () => {
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('makes an admin token at the first start, in a file only the agent user reads, and logs where but not what', () => {
    expect(tokens.admin).toMatch(/^eat_[A-Za-z0-9_-]{43}$/);
    expect(statSync(join(tmp.dir, 'data', 'admin.token')).mode & 0o777).toBe(0o600);
    const line = daemon.logs.find((l) => l.msg.startsWith('first start: an admin token'));
    expect(line?.file).toBe(join(tmp.dir, 'data', 'admin.token'));
    expect(JSON.stringify(daemon.logs)).not.toContain(tokens.admin);
  });

  it('answers every route as the role table says, for every role and every kind of bad token', async () => {
    const cases: [string, string | undefined, (p: Permission) => number][] = [
      ['no token', undefined, () => 401],
      ['malformed', 'Bearer not-a-token', () => 401],
      ['unknown', `Bearer eat_${'A'.repeat(43)}`, () => 401],
      ['expired', `Bearer ${tokens.expired}`, () => 401],
      ['revoked', `Bearer ${tokens.revoked}`, () => 401],
      ...(['admin', 'technician', 'viewer'] as const).map((role) => [role, `Bearer ${tokens[role]}`, (p: Permission) => ((PERMISSIONS[p] as readonly string[]).includes(role) ? 200 : 403)] as [string, string, (p: Permission) => number]),
    ];
    const seen: string[] = [];
    for (const route of ROUTES) {
      for (const [who, header, expected] of cases) {
        const r = await get(route.path, header ? { authorization: header } : {});
        seen.push(`${who} ${route.path} ${r.status}`);
        expect(r.status, `${who} on ${route.path}: ${JSON.stringify(r.body)}`).toBe(expected(route.permission));
        if (r.status !== 200) expect(r.body.code).toMatch(/^[A-Z_]+$/);
      }
    }
    expect(seen).toHaveLength(ROUTES.length * cases.length);
    const shown = await get('/api/v1/devices/mqtt:meter-1', { authorization: `Bearer ${tokens.viewer}` });
    expect(shown.body).toMatchObject({ device: { id: 'mqtt:meter-1', state: 'discovered' } });
  });

  it('refuses a Host header that does not name the listener (DNS rebinding), and bad queries, with JSON codes', async () => {
    const r = await get('/api/v1/devices', { host: 'evil.example', authorization: `Bearer ${tokens.admin}` });
    expect(r).toMatchObject({ status: 421, body: { code: 'HOST_NOT_ALLOWED' } });
    expect(await get('/api/v1/devices?state=bogus', { authorization: `Bearer ${tokens.admin}` })).toMatchObject({ status: 400, body: { code: 'BAD_QUERY' } });
    expect(await get('/api/v1/devices/mqtt:nothing', { authorization: `Bearer ${tokens.admin}` })).toMatchObject({ status: 404, body: { code: 'NO_SUCH_DEVICE' } });
    // No token in any answer or log line.
    expect(JSON.stringify(daemon.logs)).not.toMatch(/eat_[A-Za-z0-9_-]{43}/);
  });

  it('makes an address that keeps failing wait, even with a good token then', async () => {
    for (let i = 0; i < 30; i++) await get('/api/v1/sync/status', { authorization: `Bearer eat_${'B'.repeat(43)}` });
    expect(await get('/api/v1/sync/status', { authorization: `Bearer ${tokens.admin}` })).toMatchObject({ status: 429, body: { code: 'TOO_MANY_FAILURES' } });
  });
});
