import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { apiRoutes } from '../../../agent/api/apiRoutes.js';
import { match } from '../../../agent/api/router.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { blackhole, wrongNameTls } from '../../helpers/ldapStubs.js';
import { startSambaDc, sambaSkipReason, type SambaDc } from '../../helpers/samba.js';
import { pollUntil } from '../../helpers/waiters.js';
import { apiClient, directoryYaml, PEOPLE, populate, seed, type Person } from './directoryApi.js';

/** How often the daemon looks at the directory again in this test: the bound a leaver keeps access is this plus the directory's answer time. */
const RECHECK_SECONDS = 2;
/** What the test allows on top of the bound: a loaded 2-core machine, a DC that answers in seconds. Never asserted tighter. */
const MARGIN_MS = 20_000;
const BOUND_MS = RECHECK_SECONDS * 1000 + 2 * 3_000;

/**
 * Directory logins against a real Active Directory (Samba AD DC, started
 * here on 127.0.60.2 with a certificate of the test's CA) and the real
 * daemon: who gets in with what role and scope, how fast the directory
 * takes access away, and what hostile input gets.
 */
describe.skipIf(sambaSkipReason)('directory logins (real Samba AD DC, real daemon)', () => {
  let dc: SambaDc;
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let port = 0;
  let adminToken: string;
  let leaverRun: number;
  const { call, login } = apiClient(() => port);
  const sessions: Partial<Record<Person, string>> = {};
  const logIn = async (who: Person) => {
    const r = await login(who, PEOPLE[who].password);
    expect(r.status, r.text).toBe(201);
    sessions[who] = r.body.token as string;
    return r;
  };
  const me = (who: Person) => call('GET', '/api/v1/me', { token: sessions[who]! });
  const measured: Record<string, number> = {};

  beforeAll(async () => {
    dc = await startSambaDc({ address: '127.0.60.2' });
    await populate(dc);
    tmp = tempDir();
    copyFileSync(dc.caFile, join(tmp.dir, 'dc-ca.pem'));
    copyFileSync(dc.servicePasswordFile, join(tmp.dir, 'svc.password'));
    const lines = [
      'agent:',
      '  id: gw-dir',
      `  dataDir: ${join(tmp.dir, 'data')}`,
      'http:',
      '  port: 0',
      'mqtt:',
      '  enabled: false',
      'opcua:',
      '  enabled: true',
      '  scan:',
      '    ranges: [127.0.61.0/24]',
      'sync:',
      '  location: { site: Plant-A, area: "", line: L1, cell: "" }',
      // Copies of the DC's CA and service password: the DC's directory goes when it stops, and the daemon must then see a directory down, not a file gone.
      ...directoryYaml(dc, { recheckSeconds: RECHECK_SECONDS, caFile: join(tmp.dir, 'dc-ca.pem'), passwordFile: join(tmp.dir, 'svc.password') }),
      '',
    ];
    config = writeConfig(tmp.dir, lines.join('\n'));
    daemon = Daemon.start(config);
    port = Number(new URL(await daemon.ready()).port);
    ({ leaverRun } = seed(join(tmp.dir, 'data')));
    adminToken = readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim();
  }, 240_000);

  afterAll(async () => {
    if (Object.keys(measured).length > 0) console.log(`directory bounds measured (configured bound ${BOUND_MS} ms): ${JSON.stringify(measured)}`);
    await daemon?.dispose();
    await dc?.stop();
    tmp?.cleanup();
  }, 60_000);

  it('logs in by sAMAccountName and by UPN, with the role of a nested group; /me and users list say where the user comes from', async () => {
    const first = await logIn('anna');
    expect(first.body).toMatchObject({
      token: expect.stringMatching(/^eas_[A-Za-z0-9_-]{43}$/),
      session: { user: 'anna', role: 'technician', source: 'directory' },
    });
    // Anna is in Shift-Leads, which is in Maintenance-Leads: the mapping of the outer group applies.
    const byUpn = await login('anna@plant.test', PEOPLE.anna.password);
    expect(byUpn.status, byUpn.text).toBe(201);
    expect(byUpn.body.session).toMatchObject({ user: 'anna', role: 'technician' });
    const who = await me('anna');
    expect(who.body.user).toMatchObject({ name: 'anna', role: 'technician', source: 'directory', expiresAt: expect.any(String) });
    expect(who.body.user).not.toHaveProperty('scope');
    expect(who.body.permissions).toContain('audit.read');
    const users = await call('GET', '/api/v1/users', { token: adminToken });
    expect(users.body.items).toContainEqual(expect.objectContaining({ name: 'anna', source: 'directory', role: 'technician' }));
    expect(users.body.items).toContainEqual(expect.objectContaining({ name: 'admin', source: 'local' }));
    // A local user may not take a directory user's name.
    const clash = await call('POST', '/api/v1/users', { token: adminToken, body: { name: 'ANNA', role: 'viewer' } });
    expect(clash).toMatchObject({ status: 409, body: { code: 'USER_EXISTS' } });
    // The password is nowhere in the log.
    expect(JSON.stringify(daemon.logs)).not.toContain(PEOPLE.anna.password);
  });

  it('signs in to the web console with a directory account: the cookie is the session, limited as a login; signing out ends the session', async () => {
    const wrong = await call('POST', '/api/v1/console/session', { body: { username: 'nobody-here', password: 'not a password' } });
    expect(wrong).toMatchObject({ status: 401, body: { code: 'LOGIN_FAILED' } });
    expect(wrong.headers['set-cookie']).toBeUndefined();
    const r = await call('POST', '/api/v1/console/session', { body: { username: 'anna@plant.test', password: PEOPLE.anna.password } });
    expect(r.status, r.text).toBe(200);
    const set = String(r.headers['set-cookie']);
    // The cookie stands for the directory session, whose own secret never leaves the agent.
    expect(set).toMatch(/^edge_console=ecs_[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/);
    expect(r.body).toMatchObject({
      principal: { name: 'anna', role: 'technician', source: 'directory' },
      permissions: expect.arrayContaining(['devices.decide']),
    });
    const cookie = { cookie: set.split(';')[0]! };
    const session = (r.body.principal as { session: number }).session;
    expect((await call('GET', '/api/v1/devices', { headers: cookie })).status).toBe(200);
    const out = await call('DELETE', '/api/v1/console/session', { headers: { ...cookie, 'x-csrf-token': r.body.csrfToken as string } });
    expect(out).toMatchObject({ status: 200, body: { ended: true, session } });
    // The directory session itself has ended, not only the cookie: audited as a logout, and the cookie opens nothing.
    expect((await call('GET', '/api/v1/devices', { headers: cookie })).status).toBe(401);
    const audit = await call('GET', '/api/v1/audit?actor=anna&limit=10', { token: adminToken });
    expect(audit.body.items).toContainEqual(
      expect.objectContaining({ action: 'session.end', target: `session ${session}`, details: { reason: 'logout', kind: 'logout' } }),
    );
  });

  it('refuses a wrong password and an unknown user alike, and a user in no mapped group with the reason; audits each with the address', async () => {
    const wrong = await login('viewer1', 'not-the-password');
    expect(wrong).toMatchObject({ status: 401, body: { code: 'LOGIN_FAILED', message: 'wrong user name or password' } });
    const unknown = await login('ghost', 'whatever-Pass1');
    expect(unknown).toMatchObject({ status: 401, body: { code: 'LOGIN_FAILED', message: 'wrong user name or password' } });
    const nobody = await login('nobody1', PEOPLE.nobody1.password);
    expect(nobody).toMatchObject({ status: 403, body: { code: 'NO_ACCESS', message: expect.stringContaining('in no group auth.directory.groups maps') } });
    const audit = await call('GET', '/api/v1/audit?limit=50', { token: adminToken });
    const logins = (audit.body.items as { actor: string; action: string; outcome: string; details: Record<string, unknown> }[]).filter(
      (e) => e.action === 'login',
    );
    expect(logins).toContainEqual(
      expect.objectContaining({ actor: 'viewer1', outcome: 'refused', details: expect.objectContaining({ reason: 'bad-credentials', address: '127.0.0.1' }) }),
    );
    expect(logins).toContainEqual(expect.objectContaining({ actor: 'nobody1', outcome: 'refused', details: expect.objectContaining({ reason: 'no-access' }) }));
    expect(logins).toContainEqual(expect.objectContaining({ actor: 'anna', outcome: 'done', details: expect.objectContaining({ source: 'directory' }) }));
    const metrics = (await call('GET', '/metrics')).text;
    expect(metrics).toMatch(/^edge_agent_login_failures_total\{reason="bad-credentials"\} [1-9]/m);
    expect(JSON.stringify(daemon.logs)).not.toContain('not-the-password');
  });

  it('shows technician, contractor and viewer different things: an L2 contractor gets 403 or 404 on every route about an L3 device', async () => {
    await logIn('con2');
    await logIn('viewer1');
    const listed = async (who: Person) =>
      ((await call('GET', '/api/v1/devices', { token: sessions[who]! })).body.items as { id: string }[]).map((d) => d.id).sort();
    expect(await listed('anna')).toEqual(['mqtt:gw-meter', 'mqtt:l2-pump', 'mqtt:l3-press']);
    expect(await listed('viewer1')).toEqual(['mqtt:gw-meter', 'mqtt:l2-pump', 'mqtt:l3-press']);
    expect(await listed('con2')).toEqual(['mqtt:l2-pump']);
    const page = await call('GET', '/api/v1/devices?limit=1', { token: sessions.con2! });
    expect(page.body.total).toBe(1);
    const l3 = 'mqtt%3Al3-press';
    const probes: [string, string, unknown?][] = [
      ['GET', `/api/v1/devices/${l3}`],
      ['POST', `/api/v1/devices/${l3}/approve`, { wait: 0 }],
      ['POST', `/api/v1/devices/${l3}/reject`, { wait: 0 }],
      ['POST', `/api/v1/devices/${l3}/revoke`, { wait: 0 }],
      ['POST', `/api/v1/devices/${l3}/decommission`, { wait: 0 }],
      ['PUT', `/api/v1/devices/${l3}/annotation`, { assetTag: 'x' }],
      ['GET', '/api/v1/devices?state=discovered'],
      ['GET', '/api/v1/devices?protocol=mqtt&limit=1000'],
      ['GET', '/api/v1/certificates?identity=mqtt:l3-press'],
      ['GET', '/api/v1/audit'],
      ['GET', '/api/v1/sync/status'],
      ['GET', '/api/v1/sync/dead-letters'],
      ['GET', '/api/v1/users'],
      ['GET', '/api/v1/enrollment-tokens'],
      ['GET', `/api/v1/discovery/runs/${leaverRun}`],
      ['GET', `/api/v1/discovery/runs/${leaverRun}/events`],
      ['POST', `/api/v1/discovery/runs/${leaverRun}/cancel`, {}],
      ['GET', '/api/v1/discovery/runs'],
      ['POST', '/api/v1/sync/now', {}],
      ['POST', '/api/v1/sync/reconcile', {}],
      ['POST', '/api/v1/sync/dead-letters/retry', {}],
      ['GET', '/api/v1/certificates/crl'],
      ['GET', '/api/v1/certificates/01'],
      ['POST', '/api/v1/certificates/01/revoke', { reason: 'unspecified' }],
      ['POST', '/api/v1/users', { name: 'x', role: 'admin' }],
      ['POST', '/api/v1/users/admin/disable', {}],
      ['GET', '/api/v1/tokens'],
      ['POST', '/api/v1/tokens', { user: 'admin' }],
      ['POST', '/api/v1/tokens/1/revoke', {}],
      ['POST', '/api/v1/enrollment-tokens', {}],
      ['POST', '/api/v1/enrollment-tokens/feedfacecafe/revoke', {}],
      ['GET', '/api/v1/devices?q=press'],
      ['GET', '/api/v1/devices?line=L3&sort=name'],
      ['GET', '/api/v1/exports/devices.csv'],
      ['GET', '/api/v1/exports/devices.csv?q=meter'],
      ['GET', '/api/v1/overview'],
      ['GET', '/api/v1/onboarding'],
      ['GET', '/api/v1/report'],
      ['GET', '/api/v1/report.csv'],
    ];
    // Every route of the API is probed here, but the caller's own (me, logout, the console's session), the login and starting a run (below).
    const served = apiRoutes({ registry: new Registry() } as never).filter((r) => r.permission !== 'anyone');
    const probed = new Set(
      probes.map(([method, path]) => {
        const found = match(served, method, path.split('?')[0]!);
        return found && 'route' in found ? `${method} ${found.route.path}` : `${method} ${path}`;
      }),
    );
    const unprobed = served.map((r) => `${r.method} ${r.path}`).filter((r) => !probed.has(r));
    expect(unprobed.sort()).toEqual([
      'DELETE /api/v1/console/session',
      'DELETE /api/v1/session',
      'GET /api/v1/config-profiles',
      'GET /api/v1/config-profiles/{name}',
      'GET /api/v1/config-profiles/{name}/diff',
      'GET /api/v1/console/session',
      'GET /api/v1/me',
      'POST /api/v1/config-profiles',
      'POST /api/v1/config-profiles/dry-run',
      'POST /api/v1/config-profiles/{name}/rollback',
      'POST /api/v1/discovery/runs',
      'PUT /api/v1/devices/{id}/config-profile',
      'PUT /api/v1/devices/{id}/labels',
    ]);
    for (const [method, path, body] of probes) {
      const r = await call(method, path, { token: sessions.con2!, ...(body !== undefined ? { body } : {}) });
      // A device outside the scope is answered exactly as one that does not exist (the message repeats the id asked for, nothing more).
      const asked = path.includes(l3) ? r.text.replace('no device mqtt:l3-press', '') : r.text;
      expect(asked, `${method} ${path}`).not.toMatch(/l3-press|gw-meter|L3/);
      if (path.includes(l3)) {
        const missing = await call(method, path.replace(l3, 'mqtt%3Anever-seen'), { token: sessions.con2!, ...(body !== undefined ? { body } : {}) });
        expect(r.status, `${method} ${path}: ${r.text}`).toBe(missing.status);
        expect(r.body.code).toBe(missing.body.code);
        expect(r.status).toBe(/(revoke|decommission|annotation)$/.test(path) ? 403 : 404);
      } else if (/^\/api\/v1\/(devices\?|exports\/|overview)/.test(path)) expect(r.status, `${method} ${path}`).toBe(200);
      else if (path === '/api/v1/discovery/runs') expect(r).toMatchObject({ status: 200, body: { total: 0 } });
      else expect([403, 404], `${method} ${path}: ${r.status} ${r.text}`).toContain(r.status);
    }
    // Inside the scope the contractor acts: an approval of the L2 device is queued (mayDecide), and the device shows.
    const csv = await call('GET', '/api/v1/exports/devices.csv', { token: sessions.con2! });
    expect(
      csv.text
        .split('\r\n')
        .slice(1, -1)
        .map((l) => l.split(',')[0]),
    ).toEqual(['mqtt:l2-pump']);
    const overview = await call('GET', '/api/v1/overview', { token: sessions.con2! });
    expect(overview.body).toMatchObject({ devices: { total: 1 } });
    expect(overview.body).not.toHaveProperty('sync');
    expect(overview.body).not.toHaveProperty('certificates');
    const approve = await call('POST', '/api/v1/devices/mqtt%3Al2-pump/approve', { token: sessions.con2!, body: { wait: 0 } });
    expect(approve.status, approve.text).toBe(202);
    expect((await call('GET', '/api/v1/devices/mqtt%3Al2-pump', { token: sessions.con2! })).status).toBe(200);
    // Discovery only in the mapping's ranges, OPC UA only.
    const outside = await call('POST', '/api/v1/discovery/runs', { token: sessions.con2!, body: { protocols: ['opcua'], targets: ['127.0.61.9'] } });
    expect(outside).toMatchObject({ status: 400, body: { code: 'TARGET_NOT_ALLOWED' } });
    const mqtt = await call('POST', '/api/v1/discovery/runs', { token: sessions.con2!, body: { protocols: ['mqtt'] } });
    expect(mqtt.status).toBe(400);
    const inside = await call('POST', '/api/v1/discovery/runs', { token: sessions.con2!, body: { targets: ['127.0.61.1'] } });
    expect(inside.status, inside.text).toBe(202);
    const own = await call('GET', '/api/v1/discovery/runs', { token: sessions.con2! });
    expect(own.body).toMatchObject({ total: 1 });
    // The viewer sees all devices but decides nothing.
    expect((await call('POST', '/api/v1/devices/mqtt%3Al2-pump/approve', { token: sessions.viewer1!, body: { wait: 0 } })).status).toBe(403);
    const whoami = await me('con2');
    expect(whoami.body.user).toMatchObject({ role: 'contractor', scope: [{ line: 'L2' }], mayDecide: true, ranges: ['127.0.61.0/30'] });
    expect(whoami.body.user).toHaveProperty('expiresAt');
  });

  it('ends the session of a user disabled in AD within the bound, closes their open progress stream, and refuses their next login', async () => {
    await logIn('leaver');
    const events: string[] = [];
    const stream = new Promise<void>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path: `/api/v1/discovery/runs/${leaverRun}/events`,
          headers: { host: `127.0.0.1:${port}`, authorization: `Bearer ${sessions.leaver}` },
        },
        (res) => {
          res.on('data', (d: Buffer) => events.push(d.toString()));
          res.on('end', () => resolve());
        },
      );
      req.on('error', reject);
      req.end();
    });
    await pollUntil(() => (events.join('').includes('event: run') ? true : undefined), { message: () => `no run event: ${events.join('')}` });
    expect((await me('leaver')).status).toBe(200);
    await dc.disable('leaver');
    const start = Date.now();
    await pollUntil(async () => ((await me('leaver')).status === 401 ? true : undefined), {
      timeoutMs: BOUND_MS + MARGIN_MS,
      intervalMs: 100,
      message: () => 'the session of a disabled user still works',
    });
    measured.disabledMs = Date.now() - start;
    await stream;
    expect(events.join('')).toContain('event: revoked');
    expect((await me('leaver')).body).toMatchObject({ code: 'UNAUTHENTICATED', message: expect.stringContaining('ended') });
    expect((await login('leaver', PEOPLE.leaver.password)).status).toBe(401);
    const audit = await call('GET', '/api/v1/audit?actor=leaver', { token: adminToken });
    expect(audit.body.items).toContainEqual(
      expect.objectContaining({
        action: 'session.end',
        details: expect.objectContaining({ kind: 'deprovisioned', reason: expect.stringContaining('disabled') }),
      }),
    );
  });

  it('downgrades a user removed from a group and upgrades a promoted one within the bound, each audited as session.change', async () => {
    await logIn('mover');
    await logIn('promo');
    expect((await me('mover')).body.user).toMatchObject({ role: 'technician' });
    expect((await me('promo')).body.user).toMatchObject({ role: 'viewer' });
    await dc.removeMembers('Maintenance-Leads', ['mover']);
    await dc.addMembers('Maintenance-Leads', ['promo']);
    const start = Date.now();
    const roleOf = async (who: Person) => ((await me(who)).body.user as { role?: string } | undefined)?.role;
    await pollUntil(async () => ((await roleOf('mover')) === 'viewer' ? true : undefined), {
      timeoutMs: BOUND_MS + MARGIN_MS,
      message: () => 'mover still technician',
    });
    measured.downgradeMs = Date.now() - start;
    await pollUntil(async () => ((await roleOf('promo')) === 'technician' ? true : undefined), {
      timeoutMs: BOUND_MS + MARGIN_MS,
      message: () => 'promo still viewer',
    });
    measured.promotionMs = Date.now() - start;
    // The downgraded session is refused what the technician had; the promoted one gets it.
    expect((await call('GET', '/api/v1/audit', { token: sessions.mover! })).status).toBe(403);
    expect((await call('GET', '/api/v1/audit', { token: sessions.promo! })).status).toBe(200);
    const audit = await call('GET', '/api/v1/audit?actor=mover', { token: adminToken });
    expect(audit.body.items).toContainEqual(
      expect.objectContaining({
        action: 'session.change',
        details: expect.objectContaining({ from: expect.objectContaining({ role: 'technician' }), to: { role: 'viewer' } }),
      }),
    );
  });

  it('ends the session of an account that expires, within the bound, and refuses it a new login', async () => {
    await logIn('expiring');
    await dc.expire('expiring');
    const start = Date.now();
    await pollUntil(async () => ((await me('expiring')).status === 401 ? true : undefined), {
      timeoutMs: BOUND_MS + MARGIN_MS,
      message: () => 'expired account still in',
    });
    measured.expiredMs = Date.now() - start;
    expect((await login('expiring', PEOPLE.expiring.password)).status).toBe(401);
  });

  it('refuses hostile user names and passwords with 400, never asking the directory; a session held on the same address outlives the login limit', async () => {
    const before = (await call('GET', '/api/v1/audit?limit=1', { token: adminToken })).body.total as number;
    const corpus = ['*', ')(', 'admin*', '*)(memberOf=*', 'anna)(', 'anna\u0000', '\u0430nna', 'ann\u0430', 'a'.repeat(300), 'anna bob', '', 'anna@', '(&)'];
    for (const name of corpus) {
      const r = await login(name, 'Some-Pass1!', '127.0.0.5');
      expect(r, JSON.stringify(name)).toMatchObject({ status: 400, body: { code: 'BAD_REQUEST' } });
    }
    const empty = await login('viewer1', '', '127.0.0.6');
    expect(empty).toMatchObject({ status: 400, body: { message: expect.stringContaining('must not be empty') } });
    const long = await login('viewer1', 'x'.repeat(2_000), '127.0.0.6');
    expect(long.status).toBe(400);
    expect((await call('POST', '/api/v1/session', { body: { user: 'viewer1', password: 'x', role: 'admin' }, from: '127.0.0.6' })).status).toBe(400);
    // Wrong passwords for one name: after 5, the next are refused 429 without asking the directory; Viewer1's session, on the same address, goes on.
    const answers: number[] = [];
    for (let i = 0; i < 7; i++) answers.push((await login('promo', `wrong-${i}`)).status);
    expect(answers.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
    expect(answers.slice(5)).toEqual([429, 429]);
    expect((await me('viewer1')).status).toBe(200);
    expect((await call('GET', '/metrics')).text).toMatch(/^edge_agent_login_failures_total\{reason="limited"\} [1-9]/m);
    // In parallel, guesses get no more tries than one after the other: those waiting on the directory count against the limit.
    const parallel = await Promise.all(Array.from({ length: 10 }, (_, i) => login('nobody1', `guess-${i}`, '127.0.0.7')));
    const statuses = parallel.map((r) => r.status);
    expect(statuses.filter((s) => s === 401).length, statuses.join(' ')).toBeLessThanOrEqual(5);
    expect(statuses.filter((s) => s === 429).length, statuses.join(' ')).toBeGreaterThanOrEqual(5);
    // Nothing was made: the only new audit entries are the refusals.
    const after = await call('GET', `/api/v1/audit?limit=100`, { token: adminToken });
    const added = (after.body.items as { action: string; outcome: string }[]).slice(0, (after.body.total as number) - before);
    expect(added.every((e) => e.action === 'login' && e.outcome === 'refused')).toBe(true);
  });

  it('cuts a directory user off on this gateway when an administrator disables them, whatever the directory says', async () => {
    await logIn('admin1');
    expect((await me('admin1')).body.user).toMatchObject({ role: 'admin', source: 'directory' });
    // The local administrators, the way in when the directory is not, are a local administrator's to make and to cut off.
    expect(await call('POST', '/api/v1/users', { token: sessions.admin1!, body: { name: 'ops-x', role: 'admin' } })).toMatchObject({
      status: 403,
      body: { message: expect.stringContaining('only a local administrator') },
    });
    expect((await call('POST', '/api/v1/users/admin/disable', { token: sessions.admin1!, body: {} })).status).toBe(403);
    expect((await call('POST', '/api/v1/tokens', { token: sessions.admin1!, body: { user: 'admin' } })).status).toBe(403);
    expect((await call('POST', '/api/v1/users', { token: sessions.admin1!, body: { name: 'script-1', role: 'viewer' } })).status).toBe(201);
    const r = await call('POST', '/api/v1/users/admin1/disable', { token: adminToken, body: {} });
    expect(r).toMatchObject({ status: 200, body: { user: { name: 'admin1', source: 'directory', sessionsEnded: 1 } } });
    expect((await me('admin1')).status).toBe(401);
    expect(await login('admin1', PEOPLE.admin1.password)).toMatchObject({ status: 403, body: { code: 'NO_ACCESS' } });
  });

  it('answers 503 for a directory that never answers (serving other requests meanwhile) and for one whose certificate names another host', async () => {
    const reload = async (url: string) => {
      writeFileSync(config, readFileSync(config, 'utf8').replace(/^ {4}url: .*$/m, `    url: ${url}`));
      const from = daemon.logs.length;
      daemon.kill('SIGHUP');
      await daemon.waitForLog((l) => l.msg === 'configuration reloaded', 30_000, from);
    };
    const hole = await blackhole();
    const { certPath, keyPath } = await dc.ca.issue('other.pem', 'other.key', ['DNS:other.plant.test']);
    const wrong = await wrongNameTls(certPath, keyPath);
    try {
      await reload(`ldaps://127.0.0.1:${hole.port}`);
      let answered = false;
      const pending = login('ghost2', 'Whatever-Pass1').then((r) => {
        answered = true;
        return r;
      });
      // The login waits on the directory; the API goes on answering.
      await pollUntil(() => (hole.connections() > 0 ? true : undefined), { message: () => 'the login never reached the directory' });
      expect((await call('GET', '/api/v1/me', { token: adminToken })).status).toBe(200);
      expect(answered).toBe(false);
      expect(await pending).toMatchObject({ status: 503, body: { code: 'DIRECTORY_UNAVAILABLE' } });
      await reload(`ldaps://127.0.0.1:${wrong.port}`);
      const refused = await login('ghost2', 'Whatever-Pass1');
      expect(refused).toMatchObject({ status: 503, body: { code: 'DIRECTORY_CERTIFICATE' } });
      expect(refused.text).not.toContain('Whatever-Pass1');
    } finally {
      await reload(dc.url);
      await hole.close();
      await wrong.close();
    }
    expect((await login('viewer1', PEOPLE.viewer1.password)).status).toBe(201);
  });

  it('directory down: new logins 503 unless a cached login applies, live sessions go on, the local token works; keepSessionsMinutes 0 ends them', async () => {
    await logIn('viewer1');
    // Con2 logged in before (a verifier was kept) and out; then HR disables them. The next check takes the verifier away too.
    await logIn('con2');
    expect((await call('DELETE', '/api/v1/session', { token: sessions.con2!, body: {} })).status).toBe(200);
    await dc.disable('con2');
    const checks = async () => Number(/^edge_agent_directory_rechecks_total\{outcome="ok"\} (\d+)/m.exec((await call('GET', '/metrics')).text)?.[1] ?? 0);
    const before = await checks();
    await pollUntil(async () => ((await checks()) >= before + 2 ? true : undefined), { timeoutMs: BOUND_MS + MARGIN_MS, message: () => 'no recheck' });
    await dc.stop();
    expect(await login('con2', PEOPLE.con2.password)).toMatchObject({ status: 503, body: { code: 'DIRECTORY_UNAVAILABLE' } });
    const down = await login('anna', PEOPLE.anna.password);
    // Anna logged in before, and cached logins are on: she gets in, on the verifier of that login.
    expect(down.status, down.text).toBe(201);
    expect(down.body.session).toMatchObject({ user: 'anna', cached: true, role: 'technician' });
    const never = await login('con2x', 'Whatever-Pass1');
    expect(never).toMatchObject({ status: 503, body: { code: 'DIRECTORY_UNAVAILABLE' } });
    const wrong = await login('anna', 'wrong-offline');
    expect(wrong).toMatchObject({ status: 401, body: { code: 'LOGIN_FAILED' } });
    expect((await me('viewer1')).status).toBe(200);
    expect((await call('GET', '/api/v1/me', { token: adminToken })).status).toBe(200);
    // A failed check has happened by now (the interval is 2 s); the sessions still hold.
    await pollUntil(
      async () => ((await call('GET', '/metrics')).text.match(/^edge_agent_directory_rechecks_total\{outcome="failed"\} [1-9]/m) ? true : undefined),
      {
        timeoutMs: BOUND_MS + MARGIN_MS,
        message: () => 'no failed recheck',
      },
    );
    expect((await me('viewer1')).status).toBe(200);
    // An engineer who wants no unverified session sets keepSessionsMinutes 0: they end at the next failed check.
    const lines = readFileSync(config, 'utf8').replace('keepSessionsMinutes: 60', 'keepSessionsMinutes: 0');
    writeFileSync(config, lines);
    daemon.kill('SIGHUP');
    await pollUntil(async () => ((await me('viewer1')).status === 401 ? true : undefined), { timeoutMs: BOUND_MS + MARGIN_MS, message: () => 'session kept' });
    expect((await call('GET', '/api/v1/me', { token: adminToken })).status).toBe(200);
    const cli = await runCli(['users', 'list', '--config', config], { env: { EDGE_AGENT_TOKEN: adminToken } });
    expect(cli.code, cli.stderr).toBe(0);
  });
});
