import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import { Daemon, runCli, tempDir, writeConfig } from '../helpers/daemon.js';
import { openssl } from '../helpers/openssl.js';

type Answer = { status: number; headers: Record<string, string | string[] | undefined>; raw: Buffer; text: string; body: Record<string, unknown> };

/**
 * The routes behind the web console, on a real daemon, without a browser (test/integration/console/ drives the
 * page in Chromium): the cookie sign-in and its CSRF rule, the search, filter, sort and paging of the inventory,
 * the CSV export, the overview, the onboarding facts, and the page's headers.
 */
describe('the console routes (real daemon)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let port: number;
  let admin: string;
  let viewer: { id: number; secret: string };

  const call = (method: string, path: string, headers: Record<string, string> = {}, body?: string) =>
    new Promise<Answer>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path,
          method,
          headers: {
            host: `127.0.0.1:${port}`,
            ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}),
            ...headers,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('end', () => {
            const raw = Buffer.concat(chunks);
            const text = res.headers['content-encoding'] === 'gzip' ? gunzipSync(raw).toString() : raw.toString();
            const json = (res.headers['content-type'] ?? '').startsWith('application/json');
            resolve({ status: res.statusCode ?? 0, headers: res.headers, raw, text, body: json ? (JSON.parse(text) as Record<string, unknown>) : {} });
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  /** Signs in with a token: the cookie header to send and the CSRF token. */
  const signIn = async (token: string) => {
    const r = await call('POST', '/api/v1/console/session', {}, JSON.stringify({ token }));
    expect(r.status, r.text).toBe(200);
    const set = String(r.headers['set-cookie']);
    return { cookie: set.split(';')[0]!, csrf: r.body.csrfToken as string, set, body: r.body };
  };
  const enrollmentTokens = async () => (await call('GET', '/api/v1/enrollment-tokens', { authorization: `Bearer ${admin}` })).body.total as number;

  beforeAll(async () => {
    tmp = tempDir();
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-console',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  provisioningPort: 0',
        '  mtlsPort: 0',
        'opcua:',
        '  enabled: false',
        'sync:',
        '  location: { site: plant-1, area: press-shop }',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    port = Number(new URL(await daemon.ready()).port);
    const { store } = Store.open(
      { path: join(tmp.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    );
    const devices = new DeviceRepository(store);
    store.transaction(() => {
      // 40 devices: lines L1..L4 (none for every fifth: the gateway's site and area apply), two makers, one pending in four.
      for (let i = 0; i < 40; i++) {
        const name = `meter-${String(i).padStart(2, '0')}`;
        devices.apply({
          protocol: i % 10 === 9 ? 'opcua' : 'mqtt',
          name,
          to: i % 4 === 0 ? 'pending' : 'discovered',
          cause: 'seeded',
          actor: 'test',
          patch: {
            nameplate: { manufacturer: i % 2 ? 'Acme' : 'Globex', model: `M${i % 3}`, serialNumber: `SN-${1000 + i}` },
            ...(i % 5 ? { location: { line: `L${1 + (i % 4)}` } } : {}),
            ...(i === 7 ? { assetTag: '=HYPERLINK("http://x")' } : i === 8 ? { assetTag: '50%_off, "quoted"' } : {}),
          },
        });
      }
    });
    store.close();
    admin = readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim();
    expect((await runCli(['users', 'add', 'vera', '--role', 'viewer', '--config', config])).code).toBe(0);
    const made = await runCli(['tokens', 'create', '--user', 'vera', '--json', '--config', config]);
    viewer = JSON.parse(made.stdout) as { id: number; secret: string };
  }, 60_000);
  afterAll(async () => {
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('signs in with a token: an HttpOnly, SameSite=Strict cookie carries it; a change needs the CSRF token and this origin', async () => {
    const s = await signIn(admin);
    // The cookie holds a secret of its own, never the token: it is worth nothing once its sign-in ends.
    expect(s.set).toMatch(/^edge_console=ecs_[\w-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/);
    expect(s.set).not.toContain(admin);
    expect(s.body.principal).toMatchObject({ name: 'admin', role: 'admin', source: 'local' });
    expect(s.body.permissions).toEqual(expect.arrayContaining(['devices.decide', 'users.manage']));
    expect((await call('GET', '/api/v1/devices?limit=1', { cookie: s.cookie })).body.total).toBe(40);
    expect((await call('GET', '/api/v1/console/session', { cookie: s.cookie })).body.csrfToken).toBe(s.csrf);

    const before = await enrollmentTokens();
    const make = (headers: Record<string, string>) => call('POST', '/api/v1/enrollment-tokens', { cookie: s.cookie, ...headers }, '{}');
    for (const [why, headers] of [
      ['no CSRF header', {}],
      ['a wrong one', { 'x-csrf-token': s.csrf.replace(/^./, (c) => (c === 'A' ? 'B' : 'A')) }],
      ["another session's", { 'x-csrf-token': (await signIn(viewer.secret)).csrf }],
      ['another origin', { 'x-csrf-token': s.csrf, origin: 'http://evil.example' }],
    ] as const) {
      const r = await make(headers);
      expect(r.status, why).toBe(403);
      expect(r.body.code, why).toBe('CSRF_FAILED');
    }
    expect(await enrollmentTokens()).toBe(before);
    const made = await make({ 'x-csrf-token': s.csrf, origin: `http://127.0.0.1:${port}` });
    expect(made.status, made.text).toBe(201);
    expect(await enrollmentTokens()).toBe(before + 1);
    // A Bearer request needs no CSRF token, and the cookie is not read beside it; the cookie's secret is no Bearer token.
    expect((await call('POST', '/api/v1/enrollment-tokens', { authorization: `Bearer ${admin}`, cookie: 'edge_console=ecs_x' }, '{}')).status).toBe(201);
    const asBearer = await call('POST', '/api/v1/enrollment-tokens', { authorization: `Bearer ${s.cookie.split('=')[1]}` }, '{}');
    expect(asBearer).toMatchObject({ status: 401, body: { code: 'UNAUTHENTICATED', message: 'no valid token (malformed)' } });
    const audit = await call('GET', '/api/v1/audit?limit=20', { authorization: `Bearer ${admin}` });
    expect(audit.body.items).toContainEqual(expect.objectContaining({ action: 'access.denied', actor: 'admin' }));
    expect(audit.body.items).toContainEqual(expect.objectContaining({ action: 'console.signIn', actor: 'admin' }));
  });

  it('refuses a bad sign-in with a clear error and no cookie; ends the cookie with its token; sign-out clears it', async () => {
    for (const [body, status, code] of [
      [{ token: 'eat_not-a-token' }, 401, 'UNAUTHENTICATED'],
      [{ token: '' }, 400, 'BAD_REQUEST'],
      [{ token: admin, role: 'admin' }, 400, 'BAD_REQUEST'],
      [{ username: 'x(y)', password: 'p' }, 400, 'BAD_REQUEST'],
      [{ username: 'anna', password: 'secret' }, 404, 'DIRECTORY_OFF'],
    ] as const) {
      const r = await call('POST', '/api/v1/console/session', {}, JSON.stringify(body));
      expect(r.status, JSON.stringify(body)).toBe(status);
      expect(r.body.code).toBe(code);
      expect(r.headers['set-cookie']).toBeUndefined();
    }
    const other = JSON.parse((await runCli(['tokens', 'create', '--user', 'vera', '--json', '--config', config])).stdout) as { id: number; secret: string };
    const s = await signIn(other.secret);
    expect(s.body.permissions).not.toContain('devices.decide');
    const out = await call('DELETE', '/api/v1/console/session', { cookie: s.cookie, 'x-csrf-token': s.csrf });
    expect(out.status, out.text).toBe(200);
    expect(String(out.headers['set-cookie'])).toMatch(/^edge_console=; .*Max-Age=0/);
    // The sign-out ended the console session: the old cookie opens nothing, even sent again by hand...
    expect((await call('GET', '/api/v1/devices', { cookie: s.cookie })).status).toBe(401);
    // ...while the API token outlives it (the person signed out of the page, not out of the token)...
    expect((await call('GET', '/api/v1/me', { authorization: `Bearer ${other.secret}` })).status).toBe(200);
    const again = await signIn(other.secret);
    // ...and a revoked token ends the page's session: 401, and the cookie is cleared in the same answer.
    expect((await runCli(['tokens', 'revoke', String(other.id), '--config', config])).code).toBe(0);
    const after = await call('GET', '/api/v1/console/session', { cookie: again.cookie });
    expect(after.status).toBe(401);
    expect(String(after.headers['set-cookie'])).toContain('Max-Age=0');
  });

  it('searches, filters, sorts and pages the inventory in SQL, and exports the same selection as CSV', async () => {
    const as = { authorization: `Bearer ${admin}` };
    const list = async (query: string) => (await call('GET', `/api/v1/devices?${query}`, as)).body as { total: number; items: { id: string; name: string }[] };
    expect((await list('q=sn-1017')).items.map((d) => d.name)).toEqual(['meter-17']);
    expect((await list('q=acme')).total).toBe(20);
    // % and _ are searched as themselves, not as LIKE wildcards.
    expect((await list('q=50%25_')).items.map((d) => d.name)).toEqual(['meter-08']);
    expect((await list('q=%25')).total).toBe(1);
    expect((await list('line=L2')).total).toBe(8);
    // A location is searched by its values (the gateway's where a device has none), never as the stored JSON text.
    expect((await list('q=L2')).total).toBe(8);
    expect((await list('q=press-shop')).total).toBe(40);
    for (const key of ['line', 'site', 'cell', '%7B']) expect((await list(`q=${key}`)).total, key).toBe(0);
    // Devices without a location of their own are at the gateway's site: all 40 are.
    expect((await list('site=plant-1')).total).toBe(40);
    expect((await list('site=plant-2')).total).toBe(0);
    expect((await list('state=pending&protocol=mqtt')).total).toBe(10);
    const byName = await list('sort=name&order=desc&limit=5&offset=5');
    expect(byName.total).toBe(40);
    expect(byName.items.map((d) => d.name)).toEqual(['meter-34', 'meter-33', 'meter-32', 'meter-31', 'meter-30']);
    // The device page says where the device stands with the CMMS: sync is off on this gateway.
    expect((await call('GET', '/api/v1/devices/mqtt%3Ameter-01', as)).body).toMatchObject({ device: { id: 'mqtt:meter-01' }, sync: { state: 'off' } });
    for (const bad of ['sort=password', 'order=up', `q=${'x'.repeat(129)}`]) expect((await call('GET', `/api/v1/devices?${bad}`, as)).status, bad).toBe(400);

    const csv = await call('GET', '/api/v1/exports/devices.csv?q=acme&sort=name', as);
    expect(csv.status).toBe(200);
    expect(csv.headers['content-type']).toBe('text/csv; charset=utf-8');
    expect(csv.headers['content-disposition']).toBe('attachment; filename="devices.csv"');
    const lines = csv.text.split('\r\n');
    // A byte order mark first, for spreadsheets to read UTF-8.
    expect(lines[0]).toBe('\uFEFFid,protocol,name,state,manufacturer,model,serial,assetTag,site,area,line,cell,online,firstSeen,lastSeen,certificateSerial');
    expect(lines.at(-1)).toBe('');
    expect(lines.slice(1, -1)).toHaveLength(20);
    // The location columns are the device's own fields, or the gateway's (sync.location) where it has none, as the filters see them.
    expect(lines[1]).toMatch(/^mqtt:meter-01,mqtt,meter-01,discovered,Acme,M1,SN-1001,,plant-1,press-shop,L2,,no,20\d\d-/);
    // A formula is defused and quoted (it holds a quote); a comma and quotes are quoted as RFC 4180 says.
    expect(lines.find((l) => l.startsWith('mqtt:meter-07,'))).toContain(`,"'=HYPERLINK(""http://x"")",`);
    const all = await call('GET', '/api/v1/exports/devices.csv', as);
    expect(all.text.split('\r\n').find((l) => l.startsWith('mqtt:meter-08,'))).toContain(',"50%_off, ""quoted""",');
  });

  it('gives the overview by role: counts and alarms, sync for whoever reads it, certificates only to staff', async () => {
    const adminView = (await call('GET', '/api/v1/overview', { authorization: `Bearer ${admin}` })).body as Record<string, never>;
    expect(adminView.devices).toEqual({ total: 40, byState: { pending: 10, discovered: 30 }, byProtocol: { mqtt: 36, opcua: 4 }, online: 0 });
    expect(adminView.alarms).toContainEqual({
      code: 'PENDING_APPROVAL',
      severity: 'warning',
      message: '10 devices wait for approval',
      link: '#/devices?state=pending',
    });
    expect(adminView.certificates).toMatchObject({ expiringSoon: 0 });
    expect(adminView.sync).toMatchObject({ enabled: false });
    expect(adminView.runs).toEqual({ active: 0, recent: [] });
    const viewerView = (await call('GET', '/api/v1/overview', { authorization: `Bearer ${viewer.secret}` })).body;
    expect(viewerView.sync).toBeDefined();
    // A viewer reads neither certificates nor discovery runs (their targets and who started them) elsewhere: nor here.
    expect(viewerView.certificates).toBeUndefined();
    expect(viewerView.runs).toBeUndefined();
  });

  it('tells the onboarding page the broker URLs listened on and the root CA fingerprint openssl computes', async () => {
    const r = await call('GET', '/api/v1/onboarding', { authorization: `Bearer ${admin}` });
    expect(r.status).toBe(200);
    const broker = daemon.logs.find((l) => l.msg === 'broker listening')!;
    expect(r.body.brokers).toEqual([
      { url: `mqtts://127.0.0.1:${broker.provisioningPort}`, purpose: 'provisioning' },
      { url: `mqtts://127.0.0.1:${broker.mtlsPort}`, purpose: 'mutual-tls' },
    ]);
    const chain = (await call('GET', '/ca/chain')).text;
    // The roots, as openssl sees them: the certificates of the bundle whose subject is their issuer.
    const roots: string[] = [];
    for (const [i, pem] of chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)!.entries()) {
      writeFileSync(join(tmp.dir, `ca-${i}.pem`), pem);
      const out = (await openssl(['x509', '-in', `ca-${i}.pem`, '-noout', '-subject', '-issuer', '-fingerprint', '-sha256', '-nameopt', 'RFC2253'], tmp.dir))
        .stdout;
      const [subject, issuer, fingerprint] = out
        .trim()
        .split('\n')
        .map((l) => l.slice(l.indexOf('=') + 1));
      if (subject === issuer) roots.push(fingerprint!);
    }
    expect(roots.length).toBeGreaterThan(0);
    expect(r.body.caFingerprints).toEqual(roots);
    expect((await call('GET', '/api/v1/onboarding', { authorization: `Bearer ${viewer.secret}` })).status).toBe(403);
  });

  it('serves the page with a strict CSP, gzip and an ETag, behind the Host check; every answer says nosniff and no framing', async () => {
    const page = await call('GET', '/', { 'accept-encoding': 'gzip' });
    expect(page.status, page.text).toBe(200);
    expect(page.headers['content-encoding']).toBe('gzip');
    expect(page.headers['content-security-policy']).toContain("script-src 'self'");
    expect(page.headers['content-security-policy']).not.toContain('unsafe');
    expect(page.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(page.text).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    const script = /<script[^>]*src="([^"]+)"/.exec(page.text)![1]!;
    const asset = await call('GET', script);
    expect(asset.status).toBe(200);
    expect(asset.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect((await call('GET', script, { 'if-none-match': String(asset.headers.etag) })).status).toBe(304);
    expect((await call('GET', '/assets/../edge-agent.yaml')).status).toBe(404);
    expect((await call('GET', '/assets/nothing.js')).status).toBe(404);
    for (const r of [page, asset, await call('GET', '/healthz'), await call('GET', '/api/v1/devices')]) {
      expect(r.headers['x-content-type-options']).toBe('nosniff');
      expect(r.headers['x-frame-options']).toBe('DENY');
      expect(r.headers['referrer-policy']).toBe('no-referrer');
    }
    expect((await call('GET', '/', { host: 'evil.example' })).status).toBe(421);
  });
});
