import { readFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiRoutes } from '../../agent/api/apiRoutes.js';
import { newTokenSecret, PERMISSIONS, type Permission } from '../../agent/api/auth.js';
import { DiscoveryRunRepository } from '../../agent/store/discoveryRunRepository.js';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import { tokenHash } from '../../agent/store/enrollmentRepository.js';
import { Daemon, runCli, tempDir, writeConfig } from '../helpers/daemon.js';

/**
 * Every API route, the permission it names and the roles that may call it,
 * written out here from the issue's role descriptions, not derived from
 * auth.ts: the test also checks that the API has no route this table lacks
 * and that PERMISSIONS agrees. `allowed` is the answer a permitted role
 * gets (a POST carries a field no schema knows, so a permitted caller gets
 * 400 and changes nothing).
 */
const ROUTES: { method: 'GET' | 'POST' | 'PUT' | 'DELETE'; path: string; route: string; permission: Permission; roles: string; allowed: number }[] = [
  { method: 'GET', path: '/api/v1/me', route: '/api/v1/me', permission: 'status.read', roles: 'admin technician viewer', allowed: 200 },
  { method: 'GET', path: '/api/v1/devices', route: '/api/v1/devices', permission: 'devices.read', roles: 'admin technician viewer', allowed: 200 },
  {
    method: 'GET',
    path: '/api/v1/devices/mqtt:meter-1',
    route: '/api/v1/devices/{id}',
    permission: 'devices.read',
    roles: 'admin technician viewer',
    allowed: 200,
  },
  ...(['approve', 'reject'] as const).map((k) => ({
    method: 'POST' as const,
    path: `/api/v1/devices/mqtt:meter-1/${k}`,
    route: `/api/v1/devices/{id}/${k}`,
    permission: 'devices.decide' as const,
    roles: 'admin technician',
    allowed: 400,
  })),
  ...(['revoke', 'decommission'] as const).map((k) => ({
    method: 'POST' as const,
    path: `/api/v1/devices/mqtt:meter-1/${k}`,
    route: `/api/v1/devices/{id}/${k}`,
    permission: 'devices.retire' as const,
    roles: 'admin',
    allowed: 400,
  })),
  {
    method: 'PUT',
    path: '/api/v1/devices/mqtt:meter-1/annotation',
    route: '/api/v1/devices/{id}/annotation',
    permission: 'devices.annotate',
    roles: 'admin technician',
    allowed: 400,
  },
  {
    method: 'POST',
    path: '/api/v1/enrollment-tokens',
    route: '/api/v1/enrollment-tokens',
    permission: 'devices.enroll',
    roles: 'admin technician',
    allowed: 400,
  },
  {
    method: 'GET',
    path: '/api/v1/enrollment-tokens',
    route: '/api/v1/enrollment-tokens',
    permission: 'devices.enroll',
    roles: 'admin technician',
    allowed: 200,
  },
  {
    method: 'POST',
    path: '/api/v1/enrollment-tokens/0123456789ab/revoke',
    route: '/api/v1/enrollment-tokens/{id}/revoke',
    permission: 'devices.enroll',
    roles: 'admin technician',
    allowed: 400,
  },
  { method: 'POST', path: '/api/v1/discovery/runs', route: '/api/v1/discovery/runs', permission: 'discovery.run', roles: 'admin technician', allowed: 400 },
  { method: 'GET', path: '/api/v1/discovery/runs', route: '/api/v1/discovery/runs', permission: 'discovery.read', roles: 'admin technician', allowed: 200 },
  {
    method: 'GET',
    path: '/api/v1/discovery/runs/1',
    route: '/api/v1/discovery/runs/{id}',
    permission: 'discovery.read',
    roles: 'admin technician',
    allowed: 200,
  },
  {
    method: 'GET',
    path: '/api/v1/discovery/runs/1/events',
    route: '/api/v1/discovery/runs/{id}/events',
    permission: 'discovery.read',
    roles: 'admin technician',
    allowed: 200,
  },
  {
    method: 'POST',
    path: '/api/v1/discovery/runs/1/cancel',
    route: '/api/v1/discovery/runs/{id}/cancel',
    permission: 'discovery.run',
    roles: 'admin technician',
    allowed: 400,
  },
  { method: 'GET', path: '/api/v1/certificates', route: '/api/v1/certificates', permission: 'certificates.read', roles: 'admin technician', allowed: 200 },
  {
    method: 'GET',
    path: '/api/v1/certificates/crl',
    route: '/api/v1/certificates/crl',
    permission: 'certificates.read',
    roles: 'admin technician',
    allowed: 200,
  },
  {
    method: 'GET',
    path: '/api/v1/certificates/ab12',
    route: '/api/v1/certificates/{serial}',
    permission: 'certificates.read',
    roles: 'admin technician',
    allowed: 404,
  },
  {
    method: 'POST',
    path: '/api/v1/certificates/ab12/revoke',
    route: '/api/v1/certificates/{serial}/revoke',
    permission: 'certificates.revoke',
    roles: 'admin',
    allowed: 400,
  },
  { method: 'GET', path: '/api/v1/sync/status', route: '/api/v1/sync/status', permission: 'sync.read', roles: 'admin technician viewer', allowed: 200 },
  { method: 'POST', path: '/api/v1/sync/now', route: '/api/v1/sync/now', permission: 'sync.now', roles: 'admin technician', allowed: 400 },
  { method: 'POST', path: '/api/v1/sync/reconcile', route: '/api/v1/sync/reconcile', permission: 'sync.reconcile', roles: 'admin', allowed: 400 },
  {
    method: 'GET',
    path: '/api/v1/sync/dead-letters',
    route: '/api/v1/sync/dead-letters',
    permission: 'sync.deadLetters.read',
    roles: 'admin technician',
    allowed: 200,
  },
  {
    method: 'POST',
    path: '/api/v1/sync/dead-letters/retry',
    route: '/api/v1/sync/dead-letters/retry',
    permission: 'sync.deadLetters.retry',
    roles: 'admin',
    allowed: 400,
  },
  { method: 'GET', path: '/api/v1/users', route: '/api/v1/users', permission: 'users.manage', roles: 'admin', allowed: 200 },
  { method: 'POST', path: '/api/v1/users', route: '/api/v1/users', permission: 'users.manage', roles: 'admin', allowed: 400 },
  { method: 'POST', path: '/api/v1/users/viewer-b/disable', route: '/api/v1/users/{name}/disable', permission: 'users.manage', roles: 'admin', allowed: 400 },
  { method: 'GET', path: '/api/v1/tokens', route: '/api/v1/tokens', permission: 'users.manage', roles: 'admin', allowed: 200 },
  { method: 'POST', path: '/api/v1/tokens', route: '/api/v1/tokens', permission: 'users.manage', roles: 'admin', allowed: 400 },
  { method: 'POST', path: '/api/v1/tokens/1/revoke', route: '/api/v1/tokens/{id}/revoke', permission: 'users.manage', roles: 'admin', allowed: 400 },
  { method: 'GET', path: '/api/v1/audit', route: '/api/v1/audit', permission: 'audit.read', roles: 'admin technician', allowed: 200 },
  { method: 'DELETE', path: '/api/v1/session', route: '/api/v1/session', permission: 'status.read', roles: 'admin technician viewer', allowed: 400 },
  {
    method: 'GET',
    path: '/api/v1/console/session',
    route: '/api/v1/console/session',
    permission: 'status.read',
    roles: 'admin technician viewer',
    allowed: 200,
  },
  {
    method: 'DELETE',
    path: '/api/v1/console/session',
    route: '/api/v1/console/session',
    permission: 'status.read',
    roles: 'admin technician viewer',
    allowed: 400,
  },
  { method: 'GET', path: '/api/v1/overview', route: '/api/v1/overview', permission: 'devices.read', roles: 'admin technician viewer', allowed: 200 },
  { method: 'GET', path: '/api/v1/onboarding', route: '/api/v1/onboarding', permission: 'devices.enroll', roles: 'admin technician', allowed: 200 },
  {
    method: 'GET',
    path: '/api/v1/exports/devices.csv',
    route: '/api/v1/exports/devices.csv',
    permission: 'devices.read',
    roles: 'admin technician viewer',
    allowed: 200,
  },
  // Device configuration (issue 17): profiles are the plant's (read by all, changed by administrators); pinning and labels are a device's.
  ...(
    [
      ['GET', '/api/v1/config-profiles', '/api/v1/config-profiles', 'config.read', 200],
      ['POST', '/api/v1/config-profiles', '/api/v1/config-profiles', 'config.manage', 400],
      ['POST', '/api/v1/config-profiles/dry-run', '/api/v1/config-profiles/dry-run', 'config.manage', 400],
      ['GET', '/api/v1/config-profiles/none', '/api/v1/config-profiles/{name}', 'config.read', 404],
      ['GET', '/api/v1/config-profiles/none/diff', '/api/v1/config-profiles/{name}/diff', 'config.read', 404],
      ['POST', '/api/v1/config-profiles/none/rollback', '/api/v1/config-profiles/{name}/rollback', 'config.manage', 400],
      ['PUT', '/api/v1/devices/mqtt:meter-1/config-profile', '/api/v1/devices/{id}/config-profile', 'config.assign', 400],
      ['PUT', '/api/v1/devices/mqtt:meter-1/labels', '/api/v1/devices/{id}/labels', 'config.assign', 400],
    ] as const
  ).map(([method, path, route, permission, allowed]) => ({
    method,
    path,
    route,
    permission,
    roles: { 'config.read': 'admin technician viewer', 'config.manage': 'admin', 'config.assign': 'admin technician' }[permission],
    allowed,
  })),
  { method: 'GET', path: '/api/v1/report', route: '/api/v1/report', permission: 'report.read', roles: 'admin technician viewer', allowed: 200 },
  { method: 'GET', path: '/api/v1/report.csv', route: '/api/v1/report.csv', permission: 'report.read', roles: 'admin technician viewer', allowed: 200 },
];

type Answer = {
  status: number;
  body: { code?: string; [k: string]: unknown };
  text: string;
  cookie?: string[];
  headers: Record<string, string | string[] | undefined>;
};

describe('the local API: tokens, roles and hardening (real daemon)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let port: number;
  const tokens: Record<string, string> = {};
  const call = (method: string, path: string, headers: Record<string, string> = {}, body?: string | Buffer, localAddress?: string) =>
    new Promise<Answer>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path,
          method,
          ...(localAddress ? { localAddress } : {}),
          headers: {
            host: `127.0.0.1:${port}`,
            // Node frames a DELETE body only with a length (it sends no chunked DELETE).
            ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}),
            ...headers,
          },
        },
        (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () => {
            let parsed: Answer['body'] = {};
            if ((res.headers['content-type'] ?? '').startsWith('application/json')) parsed = JSON.parse(text) as Answer['body'];
            resolve({
              status: res.statusCode ?? 0,
              body: parsed,
              text,
              headers: res.headers,
              ...(res.headers['set-cookie'] ? { cookie: res.headers['set-cookie'] } : {}),
            });
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const get = (path: string, headers: Record<string, string> = {}) => call('GET', path, headers);
  const as = (role: string) => ({ authorization: `Bearer ${tokens[role]}` });
  const token = async (user: string, role: string, expires?: string) => {
    if ((await runCli(['users', 'list', '--config', config])).stdout.split('\n').every((l) => !l.startsWith(`${user}\t`))) {
      expect((await runCli(['users', 'add', user, '--role', role, '--config', config])).code).toBe(0);
    }
    // An already-expired token (0h) can only be made on the database: the API gives every token at least a minute.
    const made = await runCli(['tokens', 'create', '--user', user, '--json', ...(expires ? ['--expires', expires, '--local'] : []), '--config', config]);
    expect(made.code, made.stderr).toBe(0);
    return JSON.parse(made.stdout) as { id: number; secret: string };
  };

  beforeAll(async () => {
    tmp = tempDir();
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-api',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        '  names: [gw-api.plant.example]',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        '  enabled: false',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    port = Number(new URL(await daemon.ready()).port);
    const { store } = Store.open(
      { path: join(tmp.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    );
    store.transaction(() => new DeviceRepository(store).apply({ protocol: 'mqtt', name: 'meter-1', to: 'discovered', cause: 'test', actor: 'test' }));
    // A finished run: its event stream ends at once.
    const runs = new DiscoveryRunRepository(store);
    runs.finish(runs.request('opcua', 'technician', 'test').id, 'done');
    store.close();
    tokens.admin = readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim();
    tokens.technician = (await token('tech-a', 'technician')).secret;
    tokens.viewer = (await token('viewer-b', 'viewer')).secret;
    tokens.expired = tokens.expired0 = (await token('viewer-b', 'viewer', '0h')).secret;
    tokens.expired4 = (await token('viewer-b', 'viewer', '0h')).secret;
    for (const key of ['revoked', 'revoked1', 'revoked5']) {
      const revoked = await token('viewer-b', 'viewer');
      await runCli(['tokens', 'revoke', String(revoked.id), '--config', config]);
      tokens[key] = revoked.secret;
    }
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

  // First: later tests fail many times within the same minute, and the log of failures is rate-limited.
  it(
    'serves a good token from an address that keeps failing, and answers its failures 429 late; ' +
      'limits one credential tried from many addresses; logs and counts every failure, never the token',
    async () => {
      const from = '127.0.200.1';
      const guesses: string[] = [];
      const guess = (address: string, secret = newTokenSecret()) => {
        guesses.push(secret);
        return call('GET', '/api/v1/sync/status', { authorization: `Bearer ${secret}` }, undefined, address);
      };
      for (let i = 0; i < 30; i++) expect((await guess(from)).status).toBe(401);
      // The address is over its limit: a token that checks out is still served, at once.
      expect(await call('GET', '/api/v1/sync/status', as('viewer'), undefined, from)).toMatchObject({ status: 200 });
      expect(await call('GET', '/api/v1/me', as('admin'), undefined, from)).toMatchObject({ status: 200 });
      const limited = await guess(from);
      expect(limited).toMatchObject({ status: 429, body: { code: 'TOO_MANY_FAILURES' } });
      expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
      expect(limited.headers.connection).toBe('close');
      // One wrong credential from eleven addresses: past ten failures, it is over the credential's limit.
      const stolen = newTokenSecret();
      const answers: number[] = [];
      for (let i = 0; i < 11; i++) answers.push((await guess(`127.0.201.${i + 1}`, stolen)).status);
      expect(answers).toEqual([...Array(10).fill(401), 429]);
      expect(await call('GET', '/api/v1/sync/status', as('viewer'), undefined, '127.0.201.11')).toMatchObject({ status: 200 });

      const failed = await daemon.waitForLog((l) => l.msg === 'api authentication failed' && l.address === from);
      expect(failed).toMatchObject({ reason: 'unknown', route: 'GET /api/v1/sync/status', level: 'warn' });
      const byAddress = await daemon.waitForLog((l) => l.msg.startsWith('api failed-authentication limit reached') && l.scope === 'address');
      expect(byAddress.address).toBe(from);
      await daemon.waitForLog((l) => l.msg.startsWith('api failed-authentication limit reached') && l.scope === 'credential');
      // A known token that failed is named by its id and user, never by its secret.
      await call('GET', '/api/v1/me', { authorization: `Bearer ${tokens.expired}` }, undefined, '127.0.202.1');
      const ended = await daemon.waitForLog((l) => l.msg === 'api authentication failed' && l.reason === 'expired' && l.address === '127.0.202.1');
      expect(ended).toMatchObject({ user: 'viewer-b', tokenId: expect.any(Number) });
      const logs = JSON.stringify(daemon.logs);
      for (const secret of [...guesses, tokens.expired!, tokens.revoked!, tokens.admin!, tokens.viewer!]) expect(logs).not.toContain(secret);

      const metrics = (await get('/metrics')).text;
      const value = (name: string) => Number(new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(metrics)?.[1] ?? NaN);
      expect(value('edge_agent_api_auth_failures_total{reason="unknown"}')).toBeGreaterThanOrEqual(42);
      expect(value('edge_agent_api_auth_failures_total{reason="expired"}')).toBeGreaterThanOrEqual(1);
      expect(value('edge_agent_api_auth_limited_total{scope="address"}')).toBeGreaterThanOrEqual(1);
      expect(value('edge_agent_api_auth_limited_total{scope="credential"}')).toBeGreaterThanOrEqual(1);
    },
  );
  it('has no route the table above lacks, and gives each permission to the roles the table does', () => {
    // Local users are admins, technicians or viewers; the contractor role (directory users only) is tested in test/integration/directory.
    for (const r of ROUTES) expect(PERMISSIONS[r.permission].roles.filter((role) => role !== 'contractor').join(' '), `${r.method} ${r.route}`).toBe(r.roles);
    const served = apiRoutes({
      log: pino({ level: 'silent' }),
      config: () => {
        throw new Error('unused');
      },
      store: undefined as never,
      repos: undefined as never,
      bus: undefined as never,
      ca: undefined as never,
      registry: new Registry(),
      logins: undefined as never,
      watch: undefined as never,
    }).filter((r) => r.permission !== 'anyone'); // the login takes no token: test/integration/directory covers it
    expect(served.map((r) => `${r.method} ${r.path} ${r.permission}`).sort()).toEqual(ROUTES.map((r) => `${r.method} ${r.route} ${r.permission}`).sort());
  });

  it('answers every route as the role table says, for every role and every kind of bad token; audits each refusal of a role', async () => {
    // Each bad credential is a new one per route, except the expired and revoked tokens, taken in turn (each under the limit of failures per credential).
    const cases = (i: number): [string, string | undefined, (r: (typeof ROUTES)[number]) => number][] => [
      ['no token', undefined, () => 401],
      ['malformed', `Bearer not-a-token-${i}`, () => 401],
      ['unknown', `Bearer ${newTokenSecret()}`, () => 401],
      // Two of each, taken in turn: one would pass the limit of failures per credential on this many routes.
      ...(i % 4 === 0 ? [['expired', `Bearer ${tokens[`expired${i % 8}`]}`, () => 401] as [string, string, () => number]] : []),
      ...(i % 4 === 1 ? [['revoked', `Bearer ${tokens[`revoked${i % 8}`]}`, () => 401] as [string, string, () => number]] : []),
      ...(['admin', 'technician', 'viewer'] as const).map(
        (role) =>
          [role, `Bearer ${tokens[role]}`, (r: (typeof ROUTES)[number]) => (r.roles.split(' ').includes(role) ? r.allowed : 403)] as [
            string,
            string,
            (r: (typeof ROUTES)[number]) => number,
          ],
      ),
    ];
    const audited = (await get('/api/v1/audit', as('admin'))).body.total as number;
    const seen: string[] = [];
    const refused: Record<string, string[]> = { technician: [], viewer: [] };
    // Each refused call comes from its own loopback address: the limit of failed authentications per address stays out of the way.
    let source = 0;
    for (const [i, route] of ROUTES.entries()) {
      for (const [who, header, expected] of cases(i)) {
        const from = expected(route) === 401 ? `127.0.${1 + (source >> 8)}.${++source % 256}` : undefined;
        const r = await call(
          route.method,
          route.path,
          header ? { authorization: header } : {},
          route.method === 'GET' ? undefined : '{"mass_assigned":true}',
          from,
        );
        seen.push(`${who} ${route.method} ${route.path} ${r.status}`);
        expect(r.status, `${who} on ${route.method} ${route.path}: ${r.text.slice(0, 300)}`).toBe(expected(route));
        if (r.status >= 400) expect(r.body.code).toMatch(/^[A-Z_]+$/);
        expect(r.cookie, 'no answer to a Bearer token sets a cookie').toBeUndefined();
        if (r.status === 400) expect(r.body.message).toContain('mass_assigned');
        if (r.status === 403) refused[who]!.push(`${route.method} ${route.route}`);
      }
    }
    expect(seen.filter((l) => l.startsWith('admin '))).toHaveLength(ROUTES.length);
    expect(seen.filter((l) => /^(expired|revoked) /.test(l)).length).toBeGreaterThanOrEqual(14);
    const shown = await get('/api/v1/devices/mqtt:meter-1', as('viewer'));
    expect(shown.body).toMatchObject({ device: { id: 'mqtt:meter-1', state: 'discovered' } });
    // Nothing was changed by any of those calls; each refusal of a role is in the audit log, with the route.
    const after = await get(`/api/v1/audit?limit=${refused.viewer!.length + refused.technician!.length + 10}`, as('admin'));
    const entries = (after.body.items as { actor: string; action: string; target: string; outcome: string }[]).slice(0, (after.body.total as number) - audited);
    expect(
      entries.every((e) => e.action === 'access.denied' && e.outcome === 'refused'),
      JSON.stringify(entries.slice(0, 3)),
    ).toBe(true);
    for (const [who, user] of [
      ['technician', 'tech-a'],
      ['viewer', 'viewer-b'],
    ] as const) {
      expect(
        entries
          .filter((e) => e.actor === user)
          .map((e) => e.target)
          .sort(),
        who,
        // The guard audits at most 30 refusals a minute per user (AUDITED_REFUSALS_PER_MINUTE in authGuard.ts): the first 30, in order.
      ).toEqual(refused[who]!.slice(0, 30).sort());
    }
    const metrics = await get('/metrics');
    const usersManage = refused.viewer!.filter((r) => ROUTES.find((x) => `${x.method} ${x.route}` === r)!.permission === 'users.manage').length * 2;
    expect(metrics.text).toMatch(new RegExp(`^edge_agent_api_forbidden_total\\{permission="users.manage"\\} ${usersManage}$`, 'm'));
  });

  it(
    'refuses a Host header that does not name the listener (DNS rebinding), accepts the names configured, ' + 'and refuses bad queries, with JSON codes',
    async () => {
      const r = await get('/api/v1/devices', { host: 'evil.example', ...as('admin') });
      expect(r).toMatchObject({ status: 421, body: { code: 'HOST_NOT_ALLOWED' } });
      expect(await get('/api/v1/devices', { host: `gw-api.plant.example:${port}`, ...as('admin') })).toMatchObject({ status: 200 });
      expect(await get('/api/v1/devices?state=bogus', as('admin'))).toMatchObject({ status: 400, body: { code: 'BAD_QUERY' } });
      expect(await get('/api/v1/devices?role=admin', as('admin'))).toMatchObject({ status: 400, body: { code: 'BAD_QUERY' } });
      expect(await get('/api/v1/devices/mqtt:nothing', as('admin'))).toMatchObject({ status: 404, body: { code: 'NO_SUCH_DEVICE' } });
      expect(await call('DELETE', '/api/v1/devices', as('admin'))).toMatchObject({ status: 405, body: { code: 'METHOD_NOT_ALLOWED' } });
      expect(await get('/api/v1/nothing', as('admin'))).toMatchObject({ status: 404, body: { code: 'NOT_FOUND' } });
      expect(JSON.stringify(daemon.logs)).not.toMatch(/eat_[A-Za-z0-9_-]{43}/);
    },
  );

  it('refuses an oversized body (with or without a length) and unknown fields, and changes nothing', async () => {
    const path = '/api/v1/devices/mqtt:meter-1/annotation';
    const big = JSON.stringify({ assetTag: 'x'.repeat(100), pad: 'y'.repeat(100 * 1024) });
    expect(await call('PUT', path, as('technician'), big)).toMatchObject({ status: 413, body: { code: 'BODY_TOO_LARGE' } });
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path,
          method: 'PUT',
          headers: { host: `127.0.0.1:${port}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked', ...as('technician') },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? resolve(413) : reject(err)));
      for (let i = 0; i < 100; i++) req.write('x'.repeat(1024));
      req.end();
    });
    expect(chunked).toBe(413);
    expect(await call('PUT', path, as('technician'), JSON.stringify({ assetTag: 'A-1', revision: 99 }))).toMatchObject({
      status: 400,
      body: { code: 'BAD_REQUEST' },
    });
    expect(await call('POST', '/api/v1/users', as('admin'), JSON.stringify({ name: 'mallory', role: 'viewer', id: 1 }))).toMatchObject({ status: 400 });
    expect(await call('PUT', path, as('technician'), 'assetTag=A-1')).toMatchObject({ status: 400, body: { code: 'BAD_JSON' } });
    const device = (await get('/api/v1/devices/mqtt:meter-1', as('viewer'))).body.device as { assetTag?: string; revision: number };
    expect(device.assetTag).toBeUndefined();
    expect((await get('/api/v1/users', as('admin'))).body.items).not.toContainEqual(expect.objectContaining({ name: 'mallory' }));
  });

  it('records every change with who made it; a token appears once, at creation, and never in logs or later answers', async () => {
    const set = await call(
      'PUT',
      '/api/v1/devices/mqtt:meter-1/annotation',
      as('technician'),
      JSON.stringify({ assetTag: 'PLANT-4711', location: { site: 'Linz', line: 'L3' } }),
    );
    expect(set).toMatchObject({ status: 200, body: { device: { assetTag: 'PLANT-4711', location: { site: 'Linz', line: 'L3' } } } });
    expect((await get('/api/v1/devices/mqtt:meter-1', as('viewer'))).body.history).toContainEqual(
      expect.objectContaining({ actor: 'tech-a', cause: 'annotated: assetTag and location' }),
    );
    const made = await call('POST', '/api/v1/users', as('admin'), JSON.stringify({ name: 'op-c', role: 'technician' }));
    expect(made.status).toBe(201);
    const minted = await call('POST', '/api/v1/tokens', as('admin'), JSON.stringify({ user: 'op-c', label: 'tablet', expiresInSeconds: 3600 }));
    expect(minted.status).toBe(201);
    const secret = minted.body.secret as string;
    expect(secret).toMatch(/^eat_[A-Za-z0-9_-]{43}$/);
    expect((await get('/api/v1/me', { authorization: `Bearer ${secret}` })).body).toMatchObject({ user: { name: 'op-c', role: 'technician' } });
    const later = await Promise.all(['/api/v1/tokens', '/api/v1/audit', '/api/v1/me', '/api/v1/users'].map((p) => get(p, as('admin'))));
    for (const answer of later) expect(answer.text).not.toContain(secret);
    expect(JSON.stringify(daemon.logs)).not.toContain(secret);
    const audit = (await get('/api/v1/audit', as('admin'))).body.items as { actor: string; action: string; target: string; outcome: string }[];
    expect(
      audit
        .filter((e) => e.action !== 'access.denied')
        .slice(0, 3)
        .map((e) => `${e.actor} ${e.action} ${e.target} ${e.outcome}`),
    ).toEqual([expect.stringMatching(/^admin token\.create token \d+ done$/), 'admin user.add op-c done', 'tech-a device.annotate mqtt:meter-1 done']);
    // A technician sees the audit; a viewer sees only their own entries (here: what they were refused), under /me.
    expect((await get('/api/v1/audit?actor=tech-a', as('technician'))).body.items).toContainEqual(expect.objectContaining({ action: 'device.annotate' }));
    const recent = (await get('/api/v1/me', as('viewer'))).body.recent as { action: string }[];
    expect(recent.length).toBeGreaterThan(0);
    expect(recent.every((e) => e.action === 'access.denied')).toBe(true);
  });

  it('tells a command without a token how to get one (exit 77), and one with a viewer token what its role may not do', async () => {
    const none = await runCli(['certs', 'list', '--config', config, '--token-file', join(tmp.dir, 'no-such-token')]);
    expect(none.code).toBe(77);
    expect(none.stderr).toContain(`NO_TOKEN: cannot read the token file ${join(tmp.dir, 'no-such-token')}`);
    const viewer = await runCli(['certs', 'list', '--config', config], { env: { EDGE_AGENT_TOKEN: tokens.viewer } });
    expect(viewer.code).toBe(77);
    expect(viewer.stderr).toContain('FORBIDDEN: the viewer role may not do this (certificates.read)');
    expect((await runCli(['devices', 'list', '--config', config], { env: { EDGE_AGENT_TOKEN: tokens.viewer } })).stdout).toContain('mqtt:meter-1');
  });

  it('makes technicians enrollment tokens through the API (audited, never the secret), and refuses viewers', async () => {
    const made = await runCli([
      'devices',
      'token',
      'create',
      '--uses',
      '3',
      '--expires',
      '2h',
      '--label',
      'line 4',
      '--json',
      '--token',
      tokens.technician!,
      '--config',
      config,
    ]);
    expect(made.code, made.stderr).toBe(0);
    const { token, record } = JSON.parse(made.stdout) as { token: string; record: { id: string; maxUses: number; label: string } };
    expect(record).toMatchObject({ maxUses: 3, label: 'line 4' });
    const entry = (
      (await get('/api/v1/audit?actor=tech-a', as('admin'))).body.items as { action: string; target: string; details: Record<string, unknown> }[]
    )[0];
    expect(entry).toMatchObject({ action: 'enrollmentToken.create', target: `enrollment token ${record.id}`, details: { label: 'line 4', maxUses: 3 } });
    expect((await get('/api/v1/audit', as('admin'))).text).not.toContain(token);
    expect(JSON.stringify(daemon.logs)).not.toContain(token);
    const viewer = await runCli(['devices', 'token', 'create', '--config', config], { env: { EDGE_AGENT_TOKEN: tokens.viewer } });
    expect(viewer.code).toBe(77);
    expect(viewer.stderr).toContain('FORBIDDEN: the viewer role may not do this (devices.enroll)');
    expect(await call('POST', '/api/v1/enrollment-tokens', as('technician'), JSON.stringify({ uses: 0 }))).toMatchObject({
      status: 400,
      body: { code: 'BAD_REQUEST' },
    });
  });

  it(
    'lists and revokes enrollment tokens through the API and the CLI (never the secret or its hash; each revocation audited), ' +
      '404 for an unknown one, 409 for one revoked already',
    async () => {
      const make = async (label: string) => {
        const r = await runCli(['devices', 'token', 'create', '--label', label, '--uses', '2', '--json', '--token', tokens.technician!, '--config', config]);
        expect(r.code, r.stderr).toBe(0);
        return JSON.parse(r.stdout) as { token: string; record: { id: string } };
      };
      const first = await make('line 5');
      const second = await make('line 6');
      const secrets = [first.token, second.token, tokenHash(first.token), tokenHash(second.token)];
      const listed = await get('/api/v1/enrollment-tokens', as('technician'));
      expect(listed.status).toBe(200);
      expect(listed.body.items).toContainEqual(expect.objectContaining({ id: first.record.id, label: 'line 5', uses: 0, maxUses: 2 }));
      for (const secret of secrets) expect(listed.text).not.toContain(secret);
      const page = await get('/api/v1/enrollment-tokens?limit=1&offset=1', as('admin'));
      expect(page.body).toMatchObject({ total: listed.body.total, items: [(listed.body.items as unknown[])[1]] });
      const cliList = await runCli(['devices', 'token', 'list', '--token', tokens.technician!, '--config', config]);
      expect(cliList.code, cliList.stderr).toBe(0);
      expect(cliList.stderr).toBe('');
      expect(cliList.stdout).toMatch(new RegExp(`^${first.record.id}\t0/2\tuntil \\S+\tline 5$`, 'm'));
      for (const secret of secrets) expect(cliList.stdout).not.toContain(secret);

      // Through the daemon: the CLI as the technician, the API as the administrator.
      const revoked = await runCli(['devices', 'token', 'revoke', first.record.id, '--token', tokens.technician!, '--config', config]);
      expect(revoked.code, revoked.stderr).toBe(0);
      expect(revoked.stdout).toBe(`token ${first.record.id} revoked\n`);
      const viaApi = await call('POST', `/api/v1/enrollment-tokens/${second.record.id}/revoke`, as('admin'));
      expect(viaApi).toMatchObject({ status: 200, body: { token: { id: second.record.id, revokedAt: expect.any(String) } } });
      for (const secret of secrets) expect(viaApi.text).not.toContain(secret);
      const audit = (await get('/api/v1/audit?limit=20', as('admin'))).body.items as {
        actor: string;
        action: string;
        target: string;
        outcome: string;
        details: Record<string, unknown>;
      }[];
      const revocations = audit.filter((e) => e.action === 'enrollmentToken.revoke');
      expect(revocations.map((e) => `${e.actor} ${e.target} ${e.outcome}`)).toEqual([
        `admin enrollment token ${second.record.id} done`,
        `tech-a enrollment token ${first.record.id} done`,
      ]);
      expect(revocations[1]!.details).toMatchObject({ label: 'line 5', maxUses: 2 });
      expect((await runCli(['devices', 'token', 'list', '--token', tokens.technician!, '--config', config])).stdout).toMatch(
        new RegExp(`^${first.record.id}\t0/2\trevoked\tline 5$`, 'm'),
      );

      const again = await runCli(['devices', 'token', 'revoke', first.record.id, '--token', tokens.technician!, '--config', config]);
      expect(again.code).toBe(1);
      expect(again.stderr).toContain(`ALREADY_REVOKED: enrollment token ${first.record.id} is already revoked`);
      expect(await call('POST', `/api/v1/enrollment-tokens/${second.record.id}/revoke`, as('technician'))).toMatchObject({
        status: 409,
        body: { code: 'ALREADY_REVOKED' },
      });
      const unknown = await runCli(['devices', 'token', 'revoke', 'feedfacecafe', '--token', tokens.technician!, '--config', config]);
      expect(unknown.code).toBe(64);
      expect(unknown.stderr).toContain('NO_SUCH_ENROLLMENT_TOKEN: no enrollment token feedfacecafe');
      expect(await call('POST', '/api/v1/enrollment-tokens/feedfacecafe/revoke', as('admin'))).toMatchObject({
        status: 404,
        body: { code: 'NO_SUCH_ENROLLMENT_TOKEN' },
      });
      // A viewer neither lists nor revokes them.
      const viewer = await runCli(['devices', 'token', 'list', '--config', config], { env: { EDGE_AGENT_TOKEN: tokens.viewer } });
      expect(viewer.code).toBe(77);
      expect(viewer.stderr).toContain('FORBIDDEN: the viewer role may not do this (devices.enroll)');
      expect((await get('/api/v1/audit?limit=20', as('admin'))).body.items).not.toContainEqual(
        expect.objectContaining({ action: 'enrollmentToken.revoke', target: 'enrollment token feedfacecafe' }),
      );
    },
  );

  it('refuses an unknown query parameter on every route, takes limit and offset on every list, and answers every list with its total', async () => {
    const served = apiRoutes({
      log: pino({ level: 'silent' }),
      config: () => {
        throw new Error('unused');
      },
      store: undefined as never,
      repos: undefined as never,
      bus: undefined as never,
      ca: undefined as never,
      registry: new Registry(),
      logins: undefined as never,
      watch: undefined as never,
    }).filter((r) => r.permission !== 'anyone');
    const pathOf = (route: (typeof served)[number]) => ROUTES.find((r) => r.method === route.method && r.route === route.path)!.path;
    for (const route of served) {
      const r = await call(route.method, `${pathOf(route)}?bogus=1`, as('admin'), route.method === 'GET' ? undefined : '{}');
      expect(r, `${route.method} ${route.path}`).toMatchObject({
        status: 400,
        body: { code: 'BAD_QUERY', message: expect.stringContaining('unknown query parameter "bogus"') },
      });
    }
    const lists = served.filter((r) => r.query?.limit);
    expect(lists.map((r) => r.path).sort()).toEqual([
      '/api/v1/audit',
      '/api/v1/certificates',
      '/api/v1/devices',
      '/api/v1/discovery/runs',
      '/api/v1/enrollment-tokens',
      '/api/v1/sync/dead-letters',
      '/api/v1/tokens',
      '/api/v1/users',
    ]);
    for (const route of lists) {
      const page = await get(`${pathOf(route)}?limit=1&offset=0`, as('admin'));
      expect(page.status, route.path).toBe(200);
      expect(typeof page.body.total, route.path).toBe('number');
      expect((page.body.items as unknown[]).length, route.path).toBe(Math.min(1, page.body.total as number));
      expect(await get(`${pathOf(route)}?limit=0`, as('admin')), route.path).toMatchObject({ status: 400, body: { code: 'BAD_QUERY' } });
      expect(await get(`${pathOf(route)}?limit=1&limit=2`, as('admin')), route.path).toMatchObject({ status: 400, body: { code: 'BAD_QUERY' } });
    }
    const tokensPage = await get('/api/v1/tokens?limit=2&offset=1', as('admin'));
    const all = await get('/api/v1/tokens', as('admin'));
    expect(tokensPage.body.total).toBe(all.body.total);
    expect(tokensPage.body.items).toEqual((all.body.items as unknown[]).slice(1, 3));
  });

  it('checks the Host header on /healthz, /readyz and /metrics as on the API: the listener names with any port pass, others get 421', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics', '/ca/chain']) {
      const rebound = await get(path, { host: `evil.example:${port}` });
      expect(rebound, path).toMatchObject({ status: 421, body: { code: 'HOST_NOT_ALLOWED' } });
      expect(rebound.text, path).not.toMatch(/version|edge_agent_/);
    }
    for (const host of [`127.0.0.1:${port}`, 'localhost', `LOCALHOST:${port + 1}`, 'gw-api.plant.example', `[::1]:${port}`]) {
      expect((await get('/healthz', { host })).status, host).toBe(200);
      expect((await get('/metrics', { host })).status, host).toBe(200);
    }
    expect((await get('/healthz', { host: '127.0.0.1.evil.example' })).status).toBe(421);
  });
});
