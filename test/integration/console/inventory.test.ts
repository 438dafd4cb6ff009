import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SEEDED_DEVICES, seedInventory, type SeededDevice } from '../../../scripts/bench/consoleSeed.js';
import { ConsolePage, launchBrowser } from '../../helpers/browser.js';
import { Daemon, tempDir, writeConfig } from '../../helpers/daemon.js';
import { pollUntil } from '../../helpers/waiters.js';

interface Filter {
  q?: string;
  state?: string;
  protocol?: string;
  site?: string;
  area?: string;
  line?: string;
}

/** The CSV export's columns, in the console contract's order. */
const CSV_HEADER = 'id,protocol,name,state,manufacturer,model,serial,assetTag,site,area,line,cell,online,firstSeen,lastSeen,certificateSerial';

/** The test's own answer to a filter: what was seeded, filtered as the contract says, sorted by id. */
function expected(devices: SeededDevice[], f: Filter, sort: (d: SeededDevice) => string = (d) => d.id): SeededDevice[] {
  const q = f.q?.toLowerCase();
  const searched = (d: SeededDevice) =>
    [d.id, d.name, d.manufacturer, d.model, d.serial, d.assetTag ?? '', ...Object.values(d.location)].some((v) => v.toLowerCase().includes(q!));
  return devices
    .filter(
      (d) =>
        (!q || searched(d)) &&
        (!f.state || d.state === f.state) &&
        (!f.protocol || d.protocol === f.protocol) &&
        (!f.site || d.location.site === f.site) &&
        (!f.area || d.location.area === f.area) &&
        (!f.line || d.location.line === f.line),
    )
    .sort((a, b) => (sort(a) < sort(b) ? -1 : sort(a) > sort(b) ? 1 : 0));
}

/** "Showing 51–100 of 10,000" as numbers (digits only: the page may group thousands as the locale does). */
async function showing(page: Page): Promise<{ from: number; to: number; total: number } | undefined> {
  const text = await page
    .getByText(/Showing\s/)
    .first()
    .textContent({ timeout: 1_000 })
    .catch(() => undefined);
  const m = /Showing\s+([\d,.\s\u202f]+?)\s*[–-]\s*([\d,.\s\u202f]+?)\s+of\s+([\d,.\s\u202f]+)/.exec(text ?? '');
  const n = (s: string) => Number(s.replace(/\D/g, ''));
  return m ? { from: n(m[1]!), to: n(m[2]!), total: n(m[3]!) } : undefined;
}

/** The device ids of the table's rows, read from its "ID" column. */
async function rowIds(page: Page): Promise<string[]> {
  const table = page.getByRole('table');
  const headers = await table.getByRole('columnheader').allTextContents();
  const column = headers.findIndex((h) => /^ID\b/.test(h.trim()));
  if (column < 0) throw new Error(`no "ID" column among ${JSON.stringify(headers)}`);
  const cells = await table.locator(`tbody tr > :nth-child(${column + 1})`).allTextContents();
  return cells.map((c) => c.trim().split(/\s/)[0]!);
}

/** Waits until the table shows these rows of `rows` (from `from`, 1-based) and this total: the page has caught up with the filter. */
async function waitForRows(page: Page, rows: SeededDevice[], from = 1): Promise<void> {
  let last: unknown;
  await pollUntil(
    async () => {
      const shown = await showing(page);
      const ids = await rowIds(page);
      last = { shown, ids: ids.slice(0, 3) };
      if (!shown || shown.total !== rows.length || shown.from !== from) return undefined;
      const want = rows.slice(from - 1, shown.to).map((d) => d.id);
      return ids.length === want.length && ids.every((id, i) => id === want[i]) ? true : undefined;
    },
    {
      timeoutMs: 30_000,
      intervalMs: 100,
      message: () =>
        `the table never showed ${rows.length} devices from ${from} (first ${rows
          .slice(from - 1, from + 2)
          .map((d) => d.id)
          .join(', ')}); last seen ${JSON.stringify(last)}`,
    },
  );
}

/** A CSV text as rows of fields (RFC 4180: quoted fields, doubled quotes, CRLF or LF). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') (field += '"'), i++;
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') row.push(field), (field = '');
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field), rows.push(row), (row = []), (field = '');
    } else field += c;
  }
  if (field !== '' || row.length > 0) row.push(field), rows.push(row);
  return rows;
}

/**
 * The devices list of the console over an inventory of 10,000 devices seeded
 * into the daemon's database before it starts: totals, rows, paging, search,
 * filters, sorting and the CSV export compared with what was seeded.
 */
describe('console: the devices list over 10,000 devices (Chromium, real daemon)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let browser: Browser;
  let base: string;
  let adminToken: string;
  let seeded: SeededDevice[];
  const use = (work: (cp: ConsolePage) => Promise<void>) =>
    ConsolePage.use(browser, base, async (cp) => {
      await cp.signInByApi(adminToken);
      await work(cp);
    });

  beforeAll(async () => {
    tmp = tempDir();
    const dataDir = join(tmp.dir, 'data');
    const config = writeConfig(
      tmp.dir,
      ['agent:', '  id: gw-inventory', `  dataDir: ${dataDir}`, 'http:', '  port: 0', 'mqtt:', '  enabled: false', ''].join('\n'),
    );
    seeded = seedInventory(dataDir);
    daemon = Daemon.start(config);
    browser = await launchBrowser();
    base = await daemon.ready();
    adminToken = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('pages through the whole inventory, rows in id order', async () => {
    expect(seeded).toHaveLength(SEEDED_DEVICES);
    await use(async (cp) => {
      const { page } = cp;
      const all = expected(seeded, {});
      await cp.goto('#/devices');
      await page.getByRole('heading', { name: 'Devices' }).waitFor();
      await waitForRows(page, all);
      const first = (await showing(page))!;
      expect(first.from).toBe(1);
      await cp.screenshots('devices');
      await page.getByRole('button', { name: 'Next page' }).click();
      await waitForRows(page, all, first.to + 1);
      await page.getByRole('button', { name: 'Previous page' }).click();
      await waitForRows(page, all, 1);
    });
  });

  it('searches and filters on the server; the address keeps the filter across a reload', async () => {
    await use(async (cp) => {
      const { page } = cp;
      await cp.goto('#/devices');
      await page.getByRole('heading', { name: 'Devices' }).waitFor();
      const filter: Filter = {};
      await page.getByLabel('Search').fill((filter.q = 'borealis'));
      await waitForRows(page, expected(seeded, filter));
      await page.getByLabel('State').selectOption((filter.state = 'pending'));
      await waitForRows(page, expected(seeded, filter));
      await page.getByLabel('Protocol').selectOption((filter.protocol = 'mqtt'));
      await waitForRows(page, expected(seeded, filter));
      await page.getByLabel('Site').fill((filter.site = 'Plant South'));
      await waitForRows(page, expected(seeded, filter));
      expect(expected(seeded, filter).length).toBeGreaterThan(0);
      const hash = new URLSearchParams(new URL(page.url()).hash.replace(/^#\/devices\??/, ''));
      expect(Object.fromEntries(hash)).toMatchObject({ q: 'borealis', state: 'pending', protocol: 'mqtt', site: 'Plant South' });
      await page.reload();
      await waitForRows(page, expected(seeded, filter));
      expect(await page.getByLabel('Search').inputValue()).toBe('borealis');

      // A search by asset tag, by serial number (a substring of others) and by name, given in the address.
      for (const q of ['AT-0012', 'sn-123', 'PLC-0004']) {
        await cp.goto(`#/devices?q=${encodeURIComponent(q)}`);
        const rows = expected(seeded, { q });
        expect(rows.length, q).toBeGreaterThan(1);
        await waitForRows(page, rows);
      }
    });
  });

  it('sorts by a column on the server, ascending then descending, and the address says so', async () => {
    await use(async (cp) => {
      const { page } = cp;
      await cp.goto('#/devices');
      await waitForRows(page, expected(seeded, {}));
      // Names are unique: the order is the same whatever breaks ties.
      const byName = expected(seeded, {}, (d) => d.name);
      const header = page.getByRole('columnheader', { name: /^Name/ });
      await header.click();
      await waitForRows(page, byName);
      await header.click();
      await waitForRows(page, [...byName].reverse());
      expect(new URL(page.url()).hash).toMatch(/sort=name/);
      expect(new URL(page.url()).hash).toMatch(/order=desc/);
    });
  });

  it('exports the current filter as CSV, every matching device and no other', async () => {
    await use(async (cp) => {
      const { page } = cp;
      const filter = { q: 'acme', state: 'pending', protocol: 'mqtt' };
      await cp.goto(`#/devices?q=acme&state=pending&protocol=mqtt`);
      const rows = expected(seeded, filter);
      await waitForRows(page, rows);
      const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Export CSV' }).click()]);
      // A byte order mark first, for spreadsheets that would read UTF-8 as another code page.
      const csv = parseCsv(readFileSync(await download.path(), 'utf8').replace(/^\uFEFF/, ''));
      expect(csv[0]!.join(',')).toBe(CSV_HEADER);
      const body = csv.slice(1).filter((r) => r.length > 1);
      expect(body.map((r) => r[0])).toEqual(rows.map((d) => d.id));
      const columns = csv[0]!;
      const field = (r: string[], name: string) => r[columns.indexOf(name)];
      for (const [i, r] of body.entries()) {
        const d = rows[i]!;
        expect({
          protocol: field(r, 'protocol'),
          name: field(r, 'name'),
          state: field(r, 'state'),
          manufacturer: field(r, 'manufacturer'),
          model: field(r, 'model'),
          serial: field(r, 'serial'),
          assetTag: field(r, 'assetTag'),
          site: field(r, 'site'),
          area: field(r, 'area'),
          line: field(r, 'line'),
          cell: field(r, 'cell'),
          lastSeen: field(r, 'lastSeen'),
        }).toEqual({
          protocol: d.protocol,
          name: d.name,
          state: d.state,
          manufacturer: d.manufacturer,
          model: d.model,
          serial: d.serial,
          assetTag: d.assetTag ?? '',
          ...d.location,
          lastSeen: d.at.toISOString(),
        });
      }
    });
  });

  it('shows the overview counts as links to the filtered list, and a seeded device with readable times', async () => {
    await use(async (cp) => {
      const { page } = cp;
      await cp.goto('#/');
      await page.getByRole('heading', { name: 'Overview' }).waitFor();
      const pending = page.locator('a[href="#/devices?state=pending"]').first();
      await pending.waitFor();
      const count = Number(((await pending.textContent()) ?? '').replace(/\D/g, ''));
      expect(count).toBe(expected(seeded, { state: 'pending' }).length);
      await cp.screenshots('overview-10k');
      await pending.click();
      await waitForRows(page, expected(seeded, { state: 'pending' }));

      const d = seeded[1230]!;
      await cp.goto(`#/devices/${encodeURIComponent(d.id)}`);
      await page.getByRole('heading', { name: d.id }).waitFor();
      const main = page.getByRole('main');
      await main.getByText(d.manufacturer).first().waitFor();
      const text = (await main.textContent()) ?? '';
      for (const v of [d.model, d.serial]) expect(text).toContain(v);
      // An administrator sees the location and asset tag in the form that edits them.
      const place = page.getByRole('region', { name: 'Location and asset tag' });
      expect({
        assetTag: await place.getByLabel('Asset tag').inputValue(),
        site: await place.getByLabel('Site').inputValue(),
        area: await place.getByLabel('Area').inputValue(),
        line: await place.getByLabel('Line').inputValue(),
        cell: await place.getByLabel('Cell').inputValue(),
      }).toEqual({ assetTag: d.assetTag ?? '', ...d.location });
      // Times in words and local time, the exact instant in the title.
      const seen = page.locator(`[title="${d.at.toISOString()}"]`).first();
      await seen.waitFor();
      expect(await seen.textContent()).not.toContain(d.at.toISOString());
      await cp.screenshots('device-seeded');
    });
  });
});
