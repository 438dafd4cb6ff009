import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { chromium, type Browser } from 'playwright-core';
import { SEEDED_DEVICES, seedInventory } from './consoleSeed.js';
import type { BenchResult } from './result.js';

/** What the first load of the console (index.html and what it loads) may weigh, gzipped: a small page for a gateway's own listener. */
const FIRST_LOAD_BUDGET = 100 * 1024;
/** Cold loads of the devices list measured (a new browser context each: nothing cached); the median is shown. */
const LOADS = 7;
/** GETs of the same API page measured, for the comparison. */
const API_CALLS = 30;
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;
const kB = (bytes: number) => `${(bytes / 1024).toFixed(1)} kB`;

/** The browser globals the function run in the page uses (scripts compile without the DOM library). */
interface InPage {
  document: { querySelector(selector: string): unknown };
  performance: { now(): number; getEntriesByType(type: 'resource'): { name: string; responseEnd: number }[] };
  MutationObserver: new (callback: () => void) => { observe(target: unknown, options: { childList: boolean; subtree: boolean }): void; disconnect(): void };
  __firstRowsAt?: number;
}

/**
 * The files of the first load, as the daemon serves them: index.html, then
 * every script, stylesheet and icon it names on this origin; their bytes and
 * their gzipped bytes (as the daemon sends them when it compresses, else
 * gzip -9 of what it sends), and whether it compresses.
 */
async function firstLoad(base: string): Promise<{ files: string[]; raw: number; gzipped: number; servedCompressed: boolean }> {
  const get = async (path: string) => {
    const res = await fetch(`${base}${path}`, { headers: { 'accept-encoding': 'identity' } });
    if (res.status !== 200) throw new Error(`GET ${path}: ${res.status}`);
    return Buffer.from(await res.arrayBuffer());
  };
  const html = await get('/');
  const names = [...html.toString('utf8').matchAll(/<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
  const files = ['/', ...names.filter((n) => n.startsWith('/') && !n.startsWith('//'))];
  let raw = 0;
  let gzipped = 0;
  for (const path of files) {
    const body = path === '/' ? html : await get(path);
    raw += body.length;
    gzipped += gzipSync(body, { level: 9 }).length;
  }
  const probe = await fetch(`${base}/`, { headers: { 'accept-encoding': 'gzip' } });
  await probe.arrayBuffer();
  return { files, raw, gzipped, servedCompressed: probe.headers.get('content-encoding') === 'gzip' };
}

/**
 * Cold loads of #/devices in Chromium, signed in: from the start of the
 * navigation to the moment the table has its first row (seen by a
 * MutationObserver the page gets before its own scripts), in the page's own
 * clock. Answers those times and the API request the page made for the rows.
 */
async function firstRenders(
  browser: Browser,
  base: string,
  token: string,
): Promise<{ times: number[]; devicesUrl: string; scriptLoaded: number[]; rowsAnswered: number[] }> {
  const times: number[] = [];
  const scriptLoaded: number[] = [];
  const rowsAnswered: number[] = [];
  let devicesUrl = '';
  for (let i = 0; i < LOADS + 1; i++) {
    const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
    try {
      const signIn = await context.request.post(`${base}/api/v1/console/session`, { data: { token } });
      if (signIn.status() !== 200) throw new Error(`POST /api/v1/console/session: ${signIn.status()}`);
      const page = await context.newPage();
      await page.addInitScript(() => {
        const g = globalThis as unknown as InPage;
        const observer = new g.MutationObserver(() => {
          // A row with the device's link: a device, not a placeholder row.
          if (g.__firstRowsAt === undefined && g.document.querySelector('table tbody tr td a')) {
            g.__firstRowsAt = g.performance.now();
            observer.disconnect();
          }
        });
        observer.observe(g.document, { childList: true, subtree: true });
      });
      page.on('request', (r) => {
        const url = new URL(r.url());
        if (url.pathname === '/api/v1/devices' && !devicesUrl) devicesUrl = url.pathname + url.search;
      });
      await page.goto(`${base}/#/devices`);
      await page.locator('table tbody tr td a').first().waitFor({ timeout: 60_000 });
      const seen = await page.evaluate(() => {
        const g = globalThis as unknown as InPage;
        const end = (part: string) => g.performance.getEntriesByType('resource').find((e) => e.name.includes(part))?.responseEnd;
        return { at: g.__firstRowsAt, script: end('/assets/app.js'), rows: end('/api/v1/devices?') };
      });
      // The first load warms the daemon (SQLite's cache, the JIT): it is not counted.
      if (i > 0 && seen.at !== undefined) {
        times.push(seen.at);
        if (seen.script !== undefined) scriptLoaded.push(seen.script);
        if (seen.rows !== undefined) rowsAnswered.push(seen.rows);
      }
    } finally {
      await context.close();
    }
  }
  if (!devicesUrl) throw new Error('the console never asked GET /api/v1/devices');
  return { times, devicesUrl, scriptLoaded, rowsAnswered };
}

/** The time of one GET of `path` with the bearer token, body read to the end; the median of API_CALLS, after one not counted. */
async function apiTime(base: string, path: string, token: string): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < API_CALLS + 1; i++) {
    const started = performance.now();
    const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`GET ${path}: ${res.status}`);
    if (i > 0) times.push(performance.now() - started);
  }
  return median(times);
}

/**
 * The web console: what its first load weighs, gzipped, against a stated
 * budget; and how long the devices list takes to show its first rows in
 * Chromium with 10,000 devices in the inventory, next to what the API takes
 * to answer the same request in the same run (the rest is the browser:
 * loading, parsing and rendering).
 */
export async function consoleBench(): Promise<BenchResult[]> {
  if (!existsSync(CHROMIUM)) return [{ name: 'console: skipped', value: 0, unit: '', limit: `no Chromium at ${CHROMIUM} (apt-get install chromium)` }];
  if (!existsSync(join(ROOT, 'console/index.html')))
    return [{ name: 'console: skipped', value: 0, unit: '', limit: 'dist/console is not built (npm run build)' }];
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-console-'));
  const dataDir = join(dir, 'data');
  let daemon: ChildProcess | undefined;
  let browser: Browser | undefined;
  try {
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      ['agent:', '  id: gw-bench-console', `  dataDir: ${dataDir}`, 'http:', '  port: 0', 'log:', '  level: warn', 'mqtt:', '  enabled: false', ''].join('\n'),
    );
    seedInventory(dataDir, SEEDED_DEVICES);
    daemon = spawn(process.execPath, [join(ROOT, 'agent/main.js'), 'run', '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
    const urlFile = join(dataDir, 'api.url');
    for (const deadline = Date.now() + 60_000; !existsSync(urlFile); ) {
      if (Date.now() > deadline || daemon.exitCode !== null) throw new Error('the daemon did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
    const base = new URL(readFileSync(urlFile, 'utf8').trim()).origin;
    const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();

    const load = await firstLoad(base);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    const render = await firstRenders(browser, base, token);
    const api = await apiTime(base, render.devicesUrl, token);
    const first = median(render.times);
    return [
      {
        name: `console: first load, gzipped (${load.files.length} files)`,
        value: load.gzipped,
        unit: 'bytes',
        limit:
          `budget ${kB(FIRST_LOAD_BUDGET)} (${kB(load.gzipped)} used); ${kB(load.raw)} uncompressed; ` +
          `the daemon ${load.servedCompressed ? 'sends it gzipped' : 'sends it uncompressed'}`,
      },
      {
        name: `console: first rows of #/devices in Chromium (${SEEDED_DEVICES.toLocaleString('en-US')} devices, cold load)`,
        value: first,
        unit: 'ms',
        limit:
          `GET ${render.devicesUrl} alone, same run: ${api.toFixed(1)} ms (median of ${API_CALLS}); ` +
          `median of ${LOADS} loads, ${Math.round(Math.min(...render.times))}-${Math.round(Math.max(...render.times))} ms; ` +
          `in the page, app.js loaded at ${Math.round(median(render.scriptLoaded))} ms, the rows' answer at ${Math.round(median(render.rowsAnswered))} ms`,
      },
    ];
  } finally {
    await browser?.close();
    if (daemon && daemon.exitCode === null) await new Promise((r) => (daemon!.once('exit', r), daemon!.kill('SIGTERM')));
    rmSync(dir, { recursive: true, force: true });
  }
}
