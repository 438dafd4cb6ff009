import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import jsqr from 'jsqr';
import { chromium, type Browser, type BrowserContext, type Locator, type Page, type Response } from 'playwright-core';
import { PNG } from 'pngjs';
import { Daemon, REPO, writeConfig } from './daemon.js';
import { freePort } from './mosquitto.js';

// jsqr is CommonJS with its function also as `default`, which is what its types describe.
const jsQR = jsqr.default;

/**
 * The few browser globals the functions run in the page use: the project
 * compiles without the DOM library, and a function given to the page is
 * serialised, so each one casts `globalThis` itself.
 */
interface InPage {
  document: {
    documentElement: { scrollWidth: number; clientWidth: number };
    addEventListener(type: 'securitypolicyviolation', listener: (e: CspEvent) => void): void;
  };
  requestAnimationFrame(callback: () => void): number;
  __edgeTestCsp(v: { directive: string; blocked: string; source: string; line: number }): void;
}
interface CspEvent {
  effectiveDirective: string;
  blockedURI: string;
  sourceFile: string;
  lineNumber: number;
}

/** Where the console tests leave their screenshots (git-ignored): look at them. */
export const ARTIFACTS = join(REPO, 'test-artifacts/console');

/** The widths the console must work at: a tablet and a phone (issue 16). */
export const VIEWPORTS = [
  { name: 'tablet', width: 1024, height: 768 },
  { name: 'phone', width: 390, height: 844 },
] as const;

/**
 * Debian's Chromium driven by playwright-core, which downloads nothing
 * (../shared/notes/browser-tests.md). --no-sandbox: the tests run as root.
 * One browser per test file; each test opens its own context (cookies apart).
 */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
}

/** Something a page did that a test fails on, unless the test said it expects it. */
export interface Problem {
  kind: 'console' | 'pageerror' | 'requestfailed' | 'csp' | 'http' | 'layout';
  text: string;
  /** The page's URL at the time, or the resource's. */
  url: string;
}

/** The answer to signing in (docs/api.md, the console's session). */
export interface ConsoleSession {
  csrfToken: string;
  principal: { name: string; role: string };
  permissions?: string[];
}

/** An answer of the API the test provokes on purpose (a wrong token, a forged request): Chromium logs it as a console error. */
interface Expected {
  status: number;
  path: string | RegExp;
}

const FAILED_LOAD = /^Failed to load resource: the server responded with a status of (\d{3})/;

/**
 * A page of the console in a context of its own, with everything that goes
 * wrong on it recorded: console errors, uncaught exceptions, requests that
 * failed, CSP violations (reported by the page itself through a binding, and
 * by Chromium's "Refused to ..." console errors), answers of 500 and more,
 * and a body wider than the window (the console must not scroll sideways).
 * `expectClean()` fails the test on any of them.
 */
export class ConsolePage {
  readonly problems: Problem[] = [];
  private readonly expected: Expected[] = [];

  private constructor(
    readonly base: string,
    readonly context: BrowserContext,
    readonly page: Page,
  ) {}

  /**
   * Runs `work` on a page of its own and fails the test on any problem the
   * page had (expectClean), then closes it, whatever happened.
   */
  static async use(browser: Browser, base: string, work: (cp: ConsolePage) => Promise<void>, options: { deviceScaleFactor?: number } = {}): Promise<void> {
    const cp = await ConsolePage.open(browser, base, options);
    try {
      await work(cp);
      cp.expectClean();
    } finally {
      await cp.close();
    }
  }

  static async open(browser: Browser, base: string, options: { deviceScaleFactor?: number } = {}): Promise<ConsolePage> {
    const context = await browser.newContext({
      viewport: { width: VIEWPORTS[0].width, height: VIEWPORTS[0].height },
      deviceScaleFactor: options.deviceScaleFactor ?? 1,
      acceptDownloads: true,
      // The page shows local times: a fixed zone and locale keep the screenshots comparable.
      locale: 'en-GB',
      timezoneId: 'Europe/Berlin',
    });
    // A bound for a page that never shows what a test waits for, not a speed check (a loaded 2-core CI machine).
    context.setDefaultTimeout(30_000);
    const page = await context.newPage();
    const opened = new ConsolePage(base, context, page);
    await opened.listen();
    return opened;
  }

  private async listen(): Promise<void> {
    const { page } = this;
    await page.exposeBinding('__edgeTestCsp', (_source, v: { directive: string; blocked: string; source: string; line: number }) => {
      this.problems.push({ kind: 'csp', text: `${v.directive} blocked ${v.blocked || '(inline)'} at ${v.source}:${v.line}`, url: page.url() });
    });
    await page.addInitScript(() => {
      const g = globalThis as unknown as InPage;
      g.document.addEventListener('securitypolicyviolation', (e) =>
        g.__edgeTestCsp({ directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber }),
      );
    });
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      const url = m.location().url || page.url();
      const status = FAILED_LOAD.exec(m.text())?.[1];
      if (status !== undefined) this.problems.push({ kind: 'http', text: `${status} ${url}`, url });
      else this.problems.push({ kind: 'console', text: m.text(), url });
    });
    page.on('pageerror', (e) => this.problems.push({ kind: 'pageerror', text: e.stack ?? e.message, url: page.url() }));
    page.on('requestfailed', (r) => {
      const error = r.failure()?.errorText ?? 'failed';
      // A request cut short because the page moved on (an EventSource closed, a download taken over) is no fault.
      if (error === 'net::ERR_ABORTED') return;
      this.problems.push({ kind: 'requestfailed', text: `${r.method()} ${r.url()}: ${error}`, url: r.url() });
    });
  }

  /** Says that the page will meet this answer on purpose (e.g. 401 to the session probe before signing in). */
  expectHttp(status: number, path: string | RegExp): void {
    this.expected.push({ status, path });
  }

  private isExpected(p: Problem): boolean {
    if (p.kind !== 'http') return false;
    const status = Number(p.text.slice(0, 3));
    const path = new URL(p.url).pathname;
    return this.expected.some((e) => e.status === status && (typeof e.path === 'string' ? e.path === path : e.path.test(path)));
  }

  /** The problems seen so far that no `expectHttp` covers. */
  unexpected(): Problem[] {
    return this.problems.filter((p) => !this.isExpected(p));
  }

  /** Fails the test on any console error, page error, failed request, CSP violation or layout overflow seen so far. */
  expectClean(): void {
    const bad = this.unexpected();
    if (bad.length > 0) throw new Error(`the page had ${bad.length} problem(s):\n${bad.map((p) => `  [${p.kind}] ${p.text} (${p.url})`).join('\n')}`);
  }

  /** Opens a view of the console by its hash route ('#/devices?state=pending'), as a new load of the page. */
  async goto(hash = '#/'): Promise<Response | null> {
    return this.page.goto(`${this.base}/${hash}`);
  }

  /** Signs in through the page's form with an API token, and waits for the signed-in layout (its "Sign out" button). */
  async signInWithToken(token: string): Promise<void> {
    // Before a session exists, the page's probe of it is answered 401: that is how the page learns to show the form.
    this.expectHttp(401, '/api/v1/console/session');
    await this.goto('#/');
    await this.page.getByLabel('API token').fill(token);
    await this.page.getByRole('button', { name: 'Sign in with token' }).click();
    await this.page.getByRole('button', { name: 'Sign out' }).waitFor();
  }

  /**
   * Signs the context in without the form (POST /api/v1/console/session through the context's own
   * request client, whose cookies the page shares): for tests about something else than signing in.
   */
  async signInByApi(token: string): Promise<ConsoleSession> {
    const res = await this.context.request.post(`${this.base}/api/v1/console/session`, { data: { token } });
    if (res.status() !== 200) throw new Error(`POST /api/v1/console/session: ${res.status()} ${await res.text()}`);
    return (await res.json()) as ConsoleSession;
  }

  /**
   * A request made by the page itself (its origin, its cookie), as a script
   * on it would: `csrf` true sends the session's CSRF token (read from
   * GET /api/v1/console/session), a string sends that string, false none.
   */
  async fetchFromPage(
    method: string,
    path: string,
    options: { body?: unknown; csrf?: boolean | string } = {},
  ): Promise<{ status: number; body: { code?: string; message?: string } & Record<string, unknown> }> {
    return this.page.evaluate(
      async ({ method, path, body, csrf }) => {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (csrf === true) headers['x-csrf-token'] = ((await (await fetch('/api/v1/console/session')).json()) as { csrfToken: string }).csrfToken;
        else if (typeof csrf === 'string') headers['x-csrf-token'] = csrf;
        const res = await fetch(path, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
        const text = await res.text();
        return { status: res.status, body: text ? JSON.parse(text) : {} };
      },
      { method, path, body: options.body, csrf: options.csrf ?? false },
    );
  }

  /**
   * Screenshots of the whole page at tablet and phone width, saved as
   * ARTIFACTS/<name>-<width>x<height>.png; a body wider than the window at
   * either width is recorded as a problem. The tablet width is restored.
   */
  async screenshots(name: string): Promise<string[]> {
    mkdirSync(ARTIFACTS, { recursive: true });
    const files: string[] = [];
    for (const v of VIEWPORTS) {
      await this.page.setViewportSize({ width: v.width, height: v.height });
      // Two frames: the resize is laid out and painted before the picture.
      await this.page.evaluate(() => {
        const g = globalThis as unknown as InPage;
        return new Promise<void>((r) => g.requestAnimationFrame(() => g.requestAnimationFrame(r)));
      });
      const overflow = await this.page.evaluate(() => {
        const root = (globalThis as unknown as InPage).document.documentElement;
        return root.scrollWidth - root.clientWidth;
      });
      if (overflow > 0) this.problems.push({ kind: 'layout', text: `${name}: the page is ${overflow}px wider than ${v.width}px`, url: this.page.url() });
      const file = join(ARTIFACTS, `${name}-${v.width}x${v.height}.png`);
      await this.page.screenshot({ path: file, fullPage: true });
      files.push(file);
    }
    await this.page.setViewportSize({ width: VIEWPORTS[0].width, height: VIEWPORTS[0].height });
    return files;
  }

  async close(): Promise<void> {
    await this.context.close();
  }
}

/**
 * The text of the QR code an element shows: its screenshot, framed in white
 * (a QR code drawn edge to edge has no quiet zone of its own, which jsQR
 * needs to find the finder patterns), decoded by jsQR. Throws when no code is found.
 */
export async function decodeQr(element: Locator): Promise<string> {
  const shot = PNG.sync.read(await element.screenshot({ animations: 'disabled' }));
  const margin = Math.max(16, Math.round(Math.max(shot.width, shot.height) / 8));
  const framed = new PNG({ width: shot.width + 2 * margin, height: shot.height + 2 * margin });
  framed.data.fill(255);
  PNG.bitblt(shot, framed, 0, 0, shot.width, shot.height, margin, margin);
  const code = jsQR(new Uint8ClampedArray(framed.data.buffer, framed.data.byteOffset, framed.data.length), framed.width, framed.height, {
    inversionAttempts: 'attemptBoth',
  });
  if (!code) throw new Error(`no QR code found in a ${shot.width}×${shot.height} screenshot of the element`);
  return code.data;
}

/** JSON requests to the daemon's API with a bearer token, for what a test sets up or checks beside the page. */
export function bearerApi(base: string, token: string) {
  return async <T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as T };
  };
}

/**
 * What the console tests with MQTT devices run against: a real daemon (embedded broker, its provisioning
 * port known to the test, approvals carried out at once) in `dir`, Chromium, the CA chain in `dir`/ca.pem
 * for devices, and the first administrator's token with a client for the API.
 */
export async function consoleWithBroker(dir: string, id: string) {
  const port = await freePort();
  const cafile = join(dir, 'ca.pem');
  const config = writeConfig(
    dir,
    ['agent:', `  id: ${id}`, `  dataDir: ${join(dir, 'data')}`, 'http:', '  port: 0', 'mqtt:', '  actionPollMs: 100', ''].join('\n'),
  );
  const daemon = Daemon.start(config, { env: { EDGE_AGENT_MQTT_PROVISIONING_PORT: String(port) } });
  const browser = await launchBrowser();
  const base = await daemon.ready();
  writeFileSync(cafile, await (await fetch(`${base}/ca/chain`)).text());
  const adminToken = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
  return { daemon, browser, base, port, cafile, adminToken, admin: bearerApi(base, adminToken) };
}
