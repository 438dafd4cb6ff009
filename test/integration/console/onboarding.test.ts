import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type bearerApi, ConsolePage, consoleWithBroker, decodeQr } from '../../helpers/browser.js';
import { type Daemon, tempDir } from '../../helpers/daemon.js';
import { deviceRequest, requestOnce } from '../../helpers/enrollment.js';
import { pollUntil } from '../../helpers/waiters.js';

interface Onboarding {
  brokers: { url: string; purpose: string }[];
  /** The SHA-256 fingerprints of the gateway's root CAs (the contract had one, `caFingerprint`; the API gives a list). */
  caFingerprints: string[];
  caChainUrl: string;
}

/** What the enrollment QR code holds (the console's contract): all a device or a commissioning app needs. */
interface EnrollmentQr {
  type: string;
  v: number;
  token: string;
  brokers: string[];
  caFingerprint?: string;
  caFingerprints?: string[];
}

/**
 * The onboarding helpers of the console in Chromium against the real daemon:
 * an enrollment token shown as a QR code that decodes to what a device needs
 * (and a real device enrolls with it), an asset label whose QR code names
 * the device, and the administration page.
 */
describe('console: enrollment QR code, asset label and administration (Chromium, real daemon)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let browser: Browser;
  let base: string;
  let port: number;
  let cafile: string;
  let adminToken: string;
  let admin: ReturnType<typeof bearerApi>;

  beforeAll(async () => {
    tmp = tempDir();
    ({ daemon, browser, base, port, cafile, adminToken, admin } = await consoleWithBroker(tmp.dir, 'gw-onboarding'));
    const held = await requestOnce(port, cafile, 'meter-1', await deviceRequest(tmp.dir, 'meter-1'), { v5: false });
    expect(held.answer?.status, held.output).toBe('pending');
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('shows a new enrollment token once, as a QR code with the broker and CA fingerprint; a device enrolls with what it decodes to', async () => {
    let qr: EnrollmentQr | undefined;
    await ConsolePage.use(
      browser,
      base,
      async (cp) => {
        const { page } = cp;
        await cp.signInByApi(adminToken);
        await cp.goto('#/onboarding');
        await page.getByRole('heading', { name: 'Onboarding' }).waitFor();
        await page.getByLabel('Label').fill('line 3 sensors');
        await page.getByLabel('Uses').fill('2');
        await page.getByLabel('Valid for (hours)').fill('2');
        await page.getByRole('button', { name: 'Create token' }).click();
        const code = page.getByRole('img', { name: 'Enrollment QR code' });
        await code.waitFor();
        qr = JSON.parse(await decodeQr(code)) as EnrollmentQr;
        expect(qr).toMatchObject({ type: 'edge-agent-enrollment', v: 1, token: expect.any(String) });
        // The secret is shown in words too, for a device without a camera.
        expect(await page.getByRole('main').textContent()).toContain(qr.token);
        await cp.screenshots('onboarding-token');

        const onboarding = (await admin<Onboarding>('GET', '/api/v1/onboarding')).body;
        expect(qr.brokers).toEqual(onboarding.brokers.map((b) => b.url));
        expect(qr.brokers.map((b) => new URL(b).port)).toContain(String(port));
        const pinned = qr.caFingerprints ?? (qr.caFingerprint ? [qr.caFingerprint] : []);
        expect(pinned).toEqual(onboarding.caFingerprints);
        // Independently: the SHA-256 fingerprint of the self-signed root of the chain the daemon serves.
        const chain = readFileSync(cafile, 'utf8').match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
        const roots = chain.map((pem) => new X509Certificate(pem)).filter((c) => c.subject === c.issuer);
        expect(pinned.map((f) => f.toUpperCase())).toEqual(roots.map((c) => c.fingerprint256.toUpperCase()));
        const tokens = (await admin<{ items: { label: string; maxUses: number }[] }>('GET', '/api/v1/enrollment-tokens')).body.items;
        expect(tokens).toContainEqual(expect.objectContaining({ label: 'line 3 sensors', maxUses: 2 }));

        // Shown once: the page loaded again has no secret to show.
        await page.reload();
        await page.getByRole('heading', { name: 'Onboarding' }).waitFor();
        expect(await page.getByRole('main').textContent()).not.toContain(qr.token);
      },
      // A sharper picture for the decoder: the code holds some 250 characters.
      { deviceScaleFactor: 2 },
    );
    // The provisioning broker as the code names it (its host may be the gateway's name: the test reaches it on loopback).
    const broker = new URL(qr!.brokers.find((b) => new URL(b).port === String(port))!);
    const enrolled = await requestOnce(Number(broker.port), cafile, 'meter-9', await deviceRequest(tmp.dir, 'meter-9', { enrollmentToken: qr!.token }), {
      v5: false,
    });
    expect(enrolled.answer?.status, enrolled.output).toBe('issued');
  });

  it("saves a device's asset tag and location from its page, and prints a label whose QR code names the device", async () => {
    await ConsolePage.use(
      browser,
      base,
      async (cp) => {
        const { page } = cp;
        await cp.signInByApi(adminToken);
        await cp.goto(`#/devices/${encodeURIComponent('mqtt:meter-1')}`);
        await page.getByRole('heading', { name: 'mqtt:meter-1' }).waitFor();
        // The form's fields within its part of the page: "Site" or "Asset tag" may name other things elsewhere on it.
        const where = page.getByRole('region', { name: 'Location and asset tag' });
        await where.waitFor();
        await where.getByLabel('Asset tag').fill('AT-4711');
        await where.getByLabel('Site').fill('Plant North');
        await where.getByLabel('Line').fill('Line 3');
        await where.getByRole('button', { name: 'Save' }).click();
        const saved = async () => {
          const { device } = (await admin<{ device: { assetTag?: string; location?: Record<string, string> } }>('GET', '/api/v1/devices/mqtt:meter-1')).body;
          return device.assetTag === 'AT-4711' ? device : undefined;
        };
        const device = await pollUntil(saved, { message: () => 'the asset tag saved on the page never reached the inventory' });
        expect(device.location).toEqual({ site: 'Plant North', line: 'Line 3' });

        await page
          .getByRole('link', { name: 'Print asset label' })
          .or(page.getByRole('button', { name: 'Print asset label' }))
          .click();
        await page.waitForURL(/#\/devices\/[^/]+\/label$/);
        const code = page.getByRole('img', { name: 'QR code' });
        await code.waitFor();
        // What the label's code holds is the page's choice (the contract leaves it open): it must name the device and its tag.
        const text = await decodeQr(code);
        expect(JSON.parse(text)).toMatchObject({ id: 'mqtt:meter-1', assetTag: 'AT-4711' });
        const label = (await page.getByRole('main').textContent()) ?? '';
        expect(label).toContain('AT-4711');
        expect(label).toContain('mqtt:meter-1');
        await cp.screenshots('device-label');
      },
      { deviceScaleFactor: 2 },
    );
  });

  it('shows an administrator users, tokens and the audit log, filtered by actor', async () => {
    await ConsolePage.use(browser, base, async (cp) => {
      const { page } = cp;
      expect((await admin('POST', '/api/v1/users', { name: 'tech-9', role: 'technician' })).status).toBe(201);
      await cp.signInByApi(adminToken);
      await cp.goto('#/admin');
      await page.getByRole('heading', { name: 'Administration', exact: true }).waitFor();
      for (const section of ['Users', 'API tokens', 'Audit log'])
        await page
          .getByRole('heading', { name: section })
          .or(page.getByRole('tab', { name: section }))
          .first()
          .waitFor();
      await page.getByRole('cell', { name: 'tech-9', exact: true }).first().waitFor();
      await cp.screenshots('admin');
      const tab = page.getByRole('tab', { name: 'Audit log' });
      if ((await tab.count()) > 0) await tab.click();
      await page.getByLabel('Actor').fill('admin');
      await page.getByLabel('Actor').press('Enter');
      await page.getByRole('cell', { name: 'user.add' }).or(page.getByText('user.add')).first().waitFor();
    });
  });
});
