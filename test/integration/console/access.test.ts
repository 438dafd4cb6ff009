import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type bearerApi, ConsolePage, consoleWithBroker } from '../../helpers/browser.js';
import { type Daemon, tempDir } from '../../helpers/daemon.js';
import { deviceRequest, PREFIX, requestOnce, type Answer } from '../../helpers/enrollment.js';
import { openssl } from '../../helpers/openssl.js';
import { pollUntil } from '../../helpers/waiters.js';

interface Shown {
  device: { id: string; state: string; revision: number; assetTag?: string; location?: Record<string, string> };
  history: { cause: string }[];
}

/**
 * The web console in Chromium against the real daemon (embedded broker):
 * signing in and out, what each role may do on the page and what the API
 * refuses whatever the page shows, CSRF protection, and a technician's
 * approval that reaches a real MQTT device waiting for its certificate.
 */
describe('console: sign-in, roles and CSRF (Chromium, real daemon, MQTT devices)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let browser: Browser;
  let base: string;
  let port: number;
  let cafile: string;
  let adminToken: string;
  let technician: string;
  let viewer: string;
  let admin: ReturnType<typeof bearerApi>;
  const show = async (id: string) => (await admin<Shown>('GET', `/api/v1/devices/${id}`)).body;
  const use = (work: (cp: ConsolePage) => Promise<void>) => ConsolePage.use(browser, base, work);

  /** Rejects after `ms` if `promise` has not settled: a device never answered fails the test with a reason instead of hanging it. */
  const within = <T>(promise: Promise<T>, ms: number, what: string): Promise<T> =>
    Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms).unref())]);

  /** A device that asked for a certificate and waits for the answer on its response topic, as a real one does. */
  async function pendingDevice(name: string): Promise<{ answer: Promise<Answer>; close: () => Promise<void> }> {
    const held = await requestOnce(port, cafile, name, await deviceRequest(tmp.dir, name), { v5: false });
    expect(held.answer?.status, held.output).toBe('pending');
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, { clientId: name, ca: readFileSync(cafile, 'utf8'), reconnectPeriod: 0 });
    const answer = new Promise<Answer>((resolve) => client.on('message', (_t, p) => resolve(JSON.parse(p.toString()) as Answer)));
    await client.subscribeAsync(`${PREFIX}/${name}/response`, { qos: 1 });
    const answered = within(answer, 30_000, `the answer to ${name}`);
    // A device whose answer no test awaits (the viewer's) must not turn the deadline into an unhandled rejection.
    answered.catch(() => undefined);
    return { answer: answered, close: () => client.endAsync() };
  }

  /** A local user with this role and an API token for it, made through the API by the administrator. */
  async function user(name: string, role: 'technician' | 'viewer'): Promise<{ secret: string; id: number }> {
    expect((await admin('POST', '/api/v1/users', { name, role })).status).toBe(201);
    const made = await admin<{ secret: string; token: { id: number } }>('POST', '/api/v1/tokens', { user: name });
    expect(made.status).toBe(201);
    return { secret: made.body.secret, id: made.body.token.id };
  }

  beforeAll(async () => {
    tmp = tempDir();
    ({ daemon, browser, base, port, cafile, adminToken, admin } = await consoleWithBroker(tmp.dir, 'gw-console'));
    technician = (await user('tech-1', 'technician')).secret;
    viewer = (await user('viewer-1', 'viewer')).secret;
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('signs in with the admin token and out again (the cookie gone, a copy of it refused); a wrong token is refused with an alert', async () => {
    await use(async (cp) => {
      const { page } = cp;
      cp.expectHttp(401, '/api/v1/console/session');
      const loaded = await cp.goto('#/');
      // The CSP the page is checked against is the one it is served with (a violation can only show if there is a policy).
      expect(loaded?.headers()['content-security-policy']).toMatch(/default-src 'none'.*script-src 'self'/);
      await page.getByRole('heading', { name: 'Sign in' }).waitFor();
      await cp.screenshots('sign-in');

      await page.getByLabel('API token').fill('eat_not-a-token');
      await page.getByRole('button', { name: 'Sign in with token' }).click();
      const alert = page.getByRole('alert');
      await alert.waitFor();
      expect((await alert.textContent())?.trim()).not.toBe('');
      await cp.screenshots('sign-in-refused');
      expect(await cp.context.cookies()).toEqual([]);

      // By keyboard: Enter in the field submits its form.
      await page.getByLabel('API token').fill(adminToken);
      await page.getByLabel('API token').press('Enter');
      await page.getByRole('heading', { name: 'Overview' }).waitFor();
      const nav = page.getByRole('navigation');
      for (const link of ['Overview', 'Devices', 'Discovery', 'Onboarding', 'Administration']) await nav.getByRole('link', { name: link }).waitFor();
      await page.getByRole('banner').getByText('admin', { exact: false }).first().waitFor();
      const [cookie, ...others] = await cp.context.cookies();
      expect(others).toEqual([]);
      expect(cookie).toMatchObject({ name: 'edge_console', path: '/', httpOnly: true, sameSite: 'Strict', secure: false });
      // The cookie is no token in disguise: the page's scripts cannot read it.
      expect(await page.evaluate(() => (globalThis as unknown as { document: { cookie: string } }).document.cookie)).toBe('');

      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.getByRole('heading', { name: 'Sign in' }).waitFor();
      expect(await cp.context.cookies()).toEqual([]);
      // The cookie stood for a console session of its own, which signing out ended: a copy of it opens nothing.
      const old = { headers: { cookie: `edge_console=${cookie!.value}` } };
      expect((await fetch(`${base}/api/v1/console/session`, old)).status).toBe(401);
      expect((await fetch(`${base}/api/v1/devices`, old)).status).toBe(401);
      await cp.context.addCookies([cookie!]);
      await page.reload();
      await page.getByRole('heading', { name: 'Sign in' }).waitFor();
      expect(await page.getByRole('table').count()).toBe(0);
    });
  });

  it('ends a console session when its token ends: the open page returns to sign-in, the old cookie opens nothing', async () => {
    const shift = await user('shift-1', 'viewer');
    await use(async (cp) => {
      const { page } = cp;
      await cp.signInWithToken(shift.secret);
      const [cookie] = await cp.context.cookies();
      const old = { headers: { cookie: `edge_console=${cookie!.value}` } };
      expect((await fetch(`${base}/api/v1/devices`, old)).status).toBe(200);
      // The console session stands for the token: revoking the token ends every page signed in with it.
      expect((await admin('POST', `/api/v1/tokens/${shift.id}/revoke`)).status).toBe(200);
      expect((await fetch(`${base}/api/v1/console/session`, old)).status).toBe(401);
      expect((await fetch(`${base}/api/v1/devices`, old)).status).toBe(401);
      cp.expectHttp(401, /^\/api\/v1\//);
      await page.getByRole('navigation').getByRole('link', { name: 'Devices' }).click();
      await page.getByRole('heading', { name: 'Sign in' }).waitFor();
      await page.getByRole('alert').waitFor();
      expect(await page.getByRole('table').count()).toBe(0);
    });
  });

  it('lets a technician approve a pending device from the page; the waiting MQTT device gets its certificate', async () => {
    const pump = await pendingDevice('pump-1');
    try {
      await use(async (cp) => {
        const { page } = cp;
        await cp.signInWithToken(technician);
        await page.getByRole('banner').getByText('tech-1').first().waitFor();
        // A technician administers nothing.
        expect(await page.getByRole('navigation').getByRole('link', { name: 'Administration' }).count()).toBe(0);
        await page.getByRole('navigation').getByRole('link', { name: 'Devices' }).click();
        await page.getByRole('heading', { name: 'Devices' }).waitFor();
        await page.getByLabel('State').selectOption('pending');
        const row = page.getByRole('row').filter({ hasText: 'mqtt:pump-1' });
        await row.waitFor();
        await cp.screenshots('devices-pending');
        await row.getByRole('link').first().click();
        await page.getByRole('heading', { name: 'mqtt:pump-1' }).waitFor();
        await cp.screenshots('device-pending');

        await page.getByRole('button', { name: 'Approve', exact: true }).click();
        const dialog = page.getByRole('dialog');
        await dialog.getByLabel('Reason').fill('checked on site');
        await cp.screenshots('device-approve-dialog');
        await dialog.getByRole('button', { name: 'Confirm' }).click();

        const answer = await pump.answer;
        expect(answer).toMatchObject({ requestId: 'pump-1-r1', status: 'issued' });
        writeFileSync(join(tmp.dir, 'pump-1.crt'), answer.certificate!);
        const verify = await openssl(['verify', '-CAfile', cafile, '-purpose', 'sslclient', 'pump-1.crt'], tmp.dir);
        expect(verify.stdout, verify.stderr).toContain('pump-1.crt: OK');
        const shown = await show('mqtt:pump-1');
        expect(shown.device.state).toBe('provisioned');
        expect(shown.history.map((e) => e.cause).join('\n')).toContain('approved by tech-1: checked on site');
        // The page shows the outcome without a reload: the state badge (its whole text) says so.
        await page.getByRole('main').getByText('provisioned', { exact: true }).first().waitFor();
        await cp.screenshots('device-provisioned');
        // The certificate as a file: the device's certificate, then the chain the daemon serves.
        const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download PEM' }).click()]);
        const pem = readFileSync(await download.path(), 'utf8');
        expect(pem.startsWith(answer.certificate!.trim())).toBe(true);
        expect(pem).toContain(readFileSync(cafile, 'utf8').trim());
      });
    } finally {
      await pump.close();
    }
  });

  it('lets a technician reject several devices at once from the list', async () => {
    const waiting = [await pendingDevice('fan-1'), await pendingDevice('fan-2')];
    try {
      await use(async (cp) => {
        const { page } = cp;
        await cp.signInWithToken(technician);
        await cp.goto('#/devices?state=pending');
        await page.getByRole('heading', { name: 'Devices' }).waitFor();
        for (const id of ['mqtt:fan-1', 'mqtt:fan-2']) await page.getByLabel(`Select ${id}`, { exact: true }).check();
        await page.getByRole('button', { name: 'Reject selected' }).click();
        const dialog = page.getByRole('dialog');
        await dialog.getByLabel('Reason').fill('unknown vendor');
        await dialog.getByRole('button', { name: 'Confirm' }).click();
        for (const [i, w] of waiting.entries()) expect(await w.answer).toMatchObject({ requestId: `fan-${i + 1}-r1`, status: 'rejected' });
        for (const id of ['mqtt:fan-1', 'mqtt:fan-2']) expect((await show(id)).device.state).toBe('rejected');
        await pollUntil(async () => ((await page.getByLabel('Select mqtt:fan-1', { exact: true }).count()) === 0 ? true : undefined), {
          message: () => 'the pending list still shows mqtt:fan-1 after its rejection',
        });
      });
    } finally {
      for (const w of waiting) await w.close();
    }
  });

  it("shows a viewer no decision buttons, and the API refuses a decision forged from the viewer's session", async () => {
    await pendingDevice('pump-2').then((d) => d.close());
    await use(async (cp) => {
      const { page } = cp;
      await cp.signInWithToken(viewer);
      await cp.goto('#/devices?state=pending');
      await page.getByRole('row').filter({ hasText: 'mqtt:pump-2' }).waitFor();
      for (const name of ['Approve selected', 'Reject selected']) expect(await page.getByRole('button', { name }).count()).toBe(0);
      await cp.goto(`#/devices/${encodeURIComponent('mqtt:pump-2')}`);
      await page.getByRole('heading', { name: 'mqtt:pump-2' }).waitFor();
      await page.getByRole('heading', { name: 'Nameplate' }).waitFor();
      for (const name of ['Approve', 'Reject', 'Revoke', 'Decommission', 'Save'])
        expect(await page.getByRole('button', { name, exact: true }).count(), `a viewer sees "${name}"`).toBe(0);
      expect(await page.getByRole('navigation').getByRole('link', { name: 'Administration' }).count()).toBe(0);
      await cp.screenshots('device-viewer');

      // A script on the page with the session's CSRF token: the API still decides by role.
      cp.expectHttp(403, '/api/v1/devices/mqtt:pump-2/approve');
      const forged = await cp.fetchFromPage('POST', '/api/v1/devices/mqtt:pump-2/approve', { body: { reason: 'forged' }, csrf: true });
      expect(forged).toMatchObject({ status: 403, body: { code: 'FORBIDDEN' } });
      expect((await show('mqtt:pump-2')).device.state).toBe('pending');
    });
  });

  it('refuses a request carrying the cookie without the right CSRF token, and changes nothing', async () => {
    await use(async (cp) => {
      await cp.signInByApi(adminToken);
      await cp.goto('#/');
      await cp.page.getByRole('heading', { name: 'Overview' }).waitFor();
      const before = await show('mqtt:pump-2');
      cp.expectHttp(403, /^\/api\/v1\/(devices\/mqtt:pump-2\/(approve|annotation)|console\/session)$/);
      for (const csrf of [false, 'wrong-token']) {
        const approve = await cp.fetchFromPage('POST', '/api/v1/devices/mqtt:pump-2/approve', { body: { reason: 'no token' }, csrf });
        expect(approve, `CSRF token ${String(csrf)}`).toMatchObject({ status: 403, body: { code: 'CSRF_FAILED' } });
        const annotate = await cp.fetchFromPage('PUT', '/api/v1/devices/mqtt:pump-2/annotation', { body: { assetTag: 'AT-X' }, csrf });
        expect(annotate).toMatchObject({ status: 403, body: { code: 'CSRF_FAILED' } });
        const signOut = await cp.fetchFromPage('DELETE', '/api/v1/console/session', { csrf });
        expect(signOut).toMatchObject({ status: 403, body: { code: 'CSRF_FAILED' } });
      }
      expect(await show('mqtt:pump-2')).toEqual(before);
      expect((await cp.fetchFromPage('GET', '/api/v1/console/session')).status).toBe(200);
      // The same request with the token goes through: it was the token that was missing, nothing else.
      const annotated = await cp.fetchFromPage('PUT', '/api/v1/devices/mqtt:pump-2/annotation', { body: { assetTag: 'AT-X' }, csrf: true });
      expect(annotated.status).toBe(200);
      expect((await show('mqtt:pump-2')).device.assetTag).toBe('AT-X');
    });
  });
});
