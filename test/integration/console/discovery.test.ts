import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearerApi, ConsolePage, launchBrowser } from '../../helpers/browser.js';
import { Daemon, tempDir, writeConfig } from '../../helpers/daemon.js';
import { startHangingServer, startOpcuaServer, type OpcuaServerHandle, type RawTcpServer } from '../../helpers/opcuaServer.js';
import { pollUntil } from '../../helpers/waiters.js';

interface Run {
  run: { id: number; status: string; targetsTotal: number; targetsDone: number; found: number; cancelledBy?: string };
  targets: { target: string; status: string; deviceId?: string }[];
}

/**
 * Discovery started from the console in Chromium, against the real daemon
 * and a real node-opcua server: its progress is seen updating live (the
 * Server-Sent Events), what it found is shown, and a run is cancelled from
 * the page. Two listeners that never answer make the run last two probe
 * timeouts, one after the other (scan concurrency 1): long enough to watch.
 */
describe('console: discovery from the page (Chromium, real daemon, node-opcua server)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let browser: Browser;
  let base: string;
  let plc: OpcuaServerHandle;
  let silent: RawTcpServer[];
  let technician: string;
  let admin: ReturnType<typeof bearerApi>;

  beforeAll(async () => {
    tmp = tempDir();
    [plc, ...silent] = await Promise.all([
      startOpcuaServer({
        applicationUri: 'urn:plant1:press-3',
        applicationName: 'Press 3',
        buildInfo: { manufacturerName: 'ACME Automation', productName: 'ACME S9 PLC', softwareVersion: '9.4.1' },
      }),
      startHangingServer(),
      startHangingServer(),
    ]);
    const ports = [plc.port, ...silent.map((s) => s.port)];
    const config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-discovery',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        `  scan: { ranges: [127.0.0.1/32], ports: [${ports.join(', ')}], concurrency: 1, maxAddresses: 16 }`,
        '  timeoutMs: 2000',
        '  push:',
        '    enabled: false',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    browser = await launchBrowser();
    base = await daemon.ready();
    admin = bearerApi(base, readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim());
    expect((await admin('POST', '/api/v1/users', { name: 'tech-d', role: 'technician' })).status).toBe(201);
    technician = (await admin<{ secret: string }>('POST', '/api/v1/tokens', { user: 'tech-d' })).body.secret;
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await daemon?.dispose();
    await Promise.all([plc, ...(silent ?? [])].map((s) => s?.stop()));
    tmp?.cleanup();
  });

  /** Fills the "Start a run" form for an OPC UA run over 127.0.0.1 and starts it; answers the run's id, read from the address the page goes to. */
  async function startRun(page: Page): Promise<number> {
    await page.getByRole('heading', { name: 'Discovery' }).waitFor();
    await page.getByLabel('OPC UA').check();
    const mqtt = page.getByLabel('MQTT');
    if ((await mqtt.count()) > 0 && (await mqtt.isChecked())) await mqtt.uncheck();
    await page.getByLabel('Targets').fill('127.0.0.1/32');
    await page.getByRole('button', { name: 'Start run' }).click();
    await page.waitForURL(/#\/discovery\/\d+$/);
    return Number(/(\d+)$/.exec(page.url())![1]);
  }

  const progress = (page: Page) => page.getByRole('status').or(page.getByRole('log')).first();

  it('starts an OPC UA run from the page and shows its progress live, then what it found', async () => {
    await ConsolePage.use(browser, base, async (cp) => {
      const { page } = cp;
      await cp.signInByApi(technician);
      await cp.goto('#/discovery');
      await page.getByRole('heading', { name: 'Discovery' }).waitFor();
      await cp.screenshots('discovery');
      const id = await startRun(page);

      // Every text the progress region shows, until the run has ended and the page says so.
      const seen: string[] = [];
      const final = await pollUntil(
        async () => {
          const text = ((await progress(page).textContent({ timeout: 1_000 })) ?? '').replace(/\s+/g, ' ').trim();
          if (text && seen.at(-1) !== text) seen.push(text);
          const run = (await admin<Run>('GET', `/api/v1/discovery/runs/${id}`)).body;
          return run.run.status === 'done' && /\bdone\b|finished|complete/i.test(text) ? run : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 50, message: () => `the run never showed as done; texts seen: ${JSON.stringify(seen)}` },
      );
      // Progress moved while the page watched: the start, steps in between and the end (3 targets, 2 of them each a 2 s timeout).
      expect(seen.length, JSON.stringify(seen)).toBeGreaterThanOrEqual(3);
      expect(final.run).toMatchObject({ targetsTotal: 3, targetsDone: 3, found: 1 });
      const found = final.targets.find((t) => t.status === 'found')!;
      // The inventory's name of a server: its applicationUri made a name, with a digest of the original.
      expect(found.deviceId).toMatch(/^opcua:urn\.plant1\.press-3-[0-9a-f]{8}$/);
      await page.getByRole('main').getByText(found.deviceId!).first().waitFor();
      await cp.screenshots('discovery-run');
    });
  });

  it('cancels a run from the page', async () => {
    await ConsolePage.use(browser, base, async (cp) => {
      const { page } = cp;
      await cp.signInByApi(technician);
      await cp.goto('#/discovery');
      const id = await startRun(page);
      await page.getByRole('button', { name: 'Cancel run' }).click();
      const run = await pollUntil(
        async () => {
          const r = (await admin<Run>('GET', `/api/v1/discovery/runs/${id}`)).body.run;
          return r.status === 'failed' ? r : undefined;
        },
        { timeoutMs: 30_000, message: () => `run ${id} never ended after its cancel` },
      );
      expect(run.cancelledBy).toBe('tech-d');
      await pollUntil(async () => (/cancel/i.test((await progress(page).textContent()) ?? '') ? true : undefined), {
        message: () => 'the page never said the run was cancelled',
      });
    });
  });
});
