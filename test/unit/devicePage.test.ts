import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeviceState, Location, Protocol } from '../../agent/inventory/device.js';
import { Store } from '../../agent/store/database.js';
import {
  deviceOrderBy,
  devicePageJson,
  deviceWhere,
  DEVICE_SORTS,
  type DeviceFilter,
  type DeviceOrder,
  type DeviceSort,
} from '../../agent/store/deviceQuery.js';
import { DeviceRepository, toDevice, type DeviceRow } from '../../agent/store/deviceRepository.js';
import { tempDir } from '../helpers/daemon.js';

/**
 * The WHERE clause of a device list before it was written per filter (commit 7495d2c): every condition
 * present, switched off by a NULL argument. The reference the pages are compared with.
 */
function referenceWhere(filter: DeviceFilter): { where: string; args: Record<string, string | null> } {
  const fallback = filter.scope?.fallback ?? filter.fallback ?? {};
  const FIELDS = ['site', 'area', 'line'] as const;
  const LOCATION = ['site', 'area', 'line', 'cell'] as const;
  const likePattern = (q: string) => `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
  const locationOf = (f: string) => `coalesce(json_extract(devices.location, '$.${f}'), @fb_${f})`;
  const searched = [
    ...['id', 'manufacturer', 'model', 'serial_number', 'display_name', 'asset_tag'].map((c) => `coalesce(${c}, '')`),
    ...LOCATION.map((f) => `coalesce(${locationOf(f)}, '')`),
  ];
  const clauses = [
    '(@state IS NULL OR state = @state)',
    '(@protocol IS NULL OR protocol = @protocol)',
    `(@q IS NULL OR ${searched.map((c) => `${c} LIKE @q ESCAPE '\\'`).join(' OR ')})`,
    ...FIELDS.map((f) => `(@${f} IS NULL OR ${locationOf(f)} = @${f})`),
    '(@scope IS NULL OR EXISTS (SELECT 1 FROM json_each(@scope) p WHERE ' +
      FIELDS.map((f) => `(json_extract(p.value, '$.${f}') IS NULL OR ${locationOf(f)} = json_extract(p.value, '$.${f}'))`).join(' AND ') +
      '))',
  ];
  const args: Record<string, string | null> = {
    state: filter.state ?? null,
    protocol: filter.protocol ?? null,
    q: filter.q ? likePattern(filter.q) : null,
    scope: filter.scope ? JSON.stringify(filter.scope.parts) : null,
  };
  for (const f of FIELDS) args[f] = filter[f] || null;
  for (const f of LOCATION) args[`fb_${f}`] = fallback[f] || null;
  return { where: `WHERE ${clauses.join(' AND ')}`, args };
}

const STATES: DeviceState[] = ['discovered', 'pending', 'provisioned', 'rejected'];
const ODD = ['Ölpumpe "Süd"', 'back\\slash', '50%_off', 'tab\there', 'line', '{"site"', 'Presse ☃', 'caféÉ'];

/** Devices of every shape the list shows: empty and odd fields, sources, locations whole, partial or none. */
function seed(devices: DeviceRepository, store: Store): void {
  store.transaction(() => {
    for (let i = 0; i < 240; i++) {
      const protocol: Protocol = i % 3 === 0 ? 'opcua' : 'mqtt';
      const name = `${protocol === 'opcua' ? 'urn:plc' : 'dev'}-${String((i * 37) % 240).padStart(3, '0')}`;
      const odd = ODD[i % ODD.length]!;
      const location: Location | undefined =
        i % 4 === 0
          ? undefined
          : i % 4 === 1
            ? { line: `L${i % 5}` }
            : { site: i % 2 ? 'Plant North' : 'Plant South', area: i % 7 === 0 ? odd : 'Paint', line: `L${i % 5}`, cell: `C${i % 3}` };
      devices.apply({
        protocol,
        name,
        to: STATES[i % 4]!,
        cause: 'seeded',
        actor: 'test',
        at: new Date(Date.UTC(2026, 0, 1) + ((i * 7919) % 240) * 60_000),
        patch: {
          nameplate: {
            ...(i % 5 ? { manufacturer: i % 2 ? 'Acme' : 'Globex' } : {}),
            ...(i % 6 ? { model: `M-${i % 9}` } : {}),
            serialNumber: i % 11 === 0 ? odd : `SN-${1000 + i}`,
            ...(i % 8 === 0 ? { displayName: odd, firmwareVersion: '1.2.3', hardwareRevision: 'B' } : {}),
          },
          ...(location ? { location } : {}),
          ...(i % 3 === 1 ? { assetTag: i % 9 === 1 ? odd : `AT-${i}` } : {}),
          ...(i % 10 === 3 ? { source: { address: `10.0.0.${i}`, note: odd, nested: { n: i, ok: true, list: [1, 'two'] } } } : {}),
          ...(i % 13 === 0 ? { certificateSerial: `0A${i}`, reason: odd } : {}),
          ...(i % 17 === 0 ? { blocked: true, preapproved: true } : {}),
        },
      });
      if (i % 6 === 0) devices.touch(`${protocol}:${name}`, true, new Date(Date.UTC(2026, 1, 1) + i * 1000));
    }
  });
}

describe('the devices list written straight from its rows (devicePageJson)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let store: Store;
  let devices: DeviceRepository;
  beforeAll(() => {
    tmp = tempDir();
    store = Store.open(
      { path: join(tmp.dir, 'p.db'), busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    ).store;
    devices = new DeviceRepository(store);
    seed(devices, store);
  });
  afterAll(() => {
    store.close();
    tmp.cleanup();
  });

  /** The answer before: the reference WHERE, every column, each row made a Device, JSON.stringify of it all. */
  const previous = (filter: DeviceFilter, limit: number, offset: number, order?: DeviceOrder) => {
    const { where, args } = referenceWhere(filter);
    const total = (store.db.prepare(`SELECT count(*) AS n FROM devices ${where}`).get(args) as { n: number }).n;
    const rows = store.db
      .prepare(`SELECT * FROM devices ${where} ${deviceOrderBy(order)} LIMIT @limit OFFSET @offset`)
      .all({ ...args, limit, offset }) as DeviceRow[];
    return JSON.stringify({ total, items: rows.map(toDevice) });
  };

  const gateway = { site: 'Plant West', area: 'Press shop' };
  const FILTERS: [string, DeviceFilter][] = [
    ['nothing', {}],
    ['nothing, gateway location', { fallback: gateway }],
    ['a state', { state: 'pending' }],
    ['a protocol and a state', { protocol: 'opcua', state: 'discovered' }],
    ['an empty search', { q: '' }],
    ['a maker, other case', { q: 'aCmE' }],
    ['a serial', { q: 'sn-101' }],
    ['an id part', { q: 'urn:plc-01' }],
    ['% and _ as themselves', { q: '50%_' }],
    ['a lone %', { q: '%' }],
    ['a backslash', { q: 'back\\sl' }],
    ['a double quote', { q: '"Süd' }],
    ['a tab', { q: 'tab\th' }],
    ['non-ASCII, case differs only in ASCII', { q: 'CAFÉé' }],
    ['non-ASCII exact', { q: 'caféÉ' }],
    ['a snowman', { q: '☃' }],
    ['a location value', { q: 'l3' }],
    ['a location value, with a gateway', { q: 'paint', fallback: gateway }],
    ['a gateway value (devices without their own)', { q: 'press', fallback: gateway }],
    ['a gateway value in ASCII upper case', { q: 'PLANT W', fallback: gateway }],
    ['a key of the stored JSON, never searched', { q: 'site' }],
    ['a key with its quote', { q: '"line"' }],
    ['JSON punctuation', { q: '{' }],
    ['a site', { site: 'Plant North' }],
    ['a site from the gateway', { site: 'Plant West', fallback: gateway }],
    ['an area and a line', { area: 'Paint', line: 'L2' }],
    ['an empty site (no filter)', { site: '' }],
    ['a scope', { scope: { parts: [{ site: 'Plant South' }, { area: 'Press shop', line: 'L1' }], fallback: gateway } }],
    ['a scope and a search', { q: 'globex', state: 'rejected', scope: { parts: [{ site: 'Plant West' }], fallback: gateway } }],
    ['everything', { state: 'provisioned', protocol: 'mqtt', q: 'a', site: 'Plant North', area: 'Paint', line: 'L1', fallback: gateway }],
  ];
  const ORDERS: (DeviceOrder | undefined)[] = [
    undefined,
    ...(Object.keys(DEVICE_SORTS) as DeviceSort[]).flatMap((sort) => [
      { sort, order: 'asc' as const },
      { sort, order: 'desc' as const },
    ]),
  ];

  it.each(FILTERS.map(([name, filter], index) => [name, filter, index] as const))(
    'a filter of %s: the whole list in every order, and its pages, are the same text as before',
    (_name, filter, index) => {
      for (const [o, order] of ORDERS.entries()) {
        const all = previous(filter, 1000, 0, order);
        expect(devicePageJson(store, filter, 1000, 0, order), `${JSON.stringify(order)}: all`).toBe(all);
        // Paged: in the default order and in a few sorts, both ways (which ones turns with the filter).
        if (o !== 0 && (o + index) % 6 > 1) continue;
        // Pages of 25 across the whole selection and one past its end: each the same text, together the whole list in order.
        const total = (JSON.parse(all) as { total: number }).total;
        const items: unknown[] = [];
        for (let offset = 0; offset <= total; offset += 25) {
          const page = devicePageJson(store, filter, 25, offset, order);
          expect(page, `${JSON.stringify(order)}: offset ${offset}`).toBe(previous(filter, 25, offset, order));
          items.push(...(JSON.parse(page) as { items: unknown[] }).items);
        }
        expect(items).toEqual((JSON.parse(all) as { items: unknown[] }).items);
        // The repository's own page (the same WHERE) answers the same devices.
        expect(JSON.stringify(devices.page(filter, 7, 7, order))).toBe(previous(filter, 7, 7, order));
      }
    },
  );

  it('finds what it should (the reference is not empty where it matters)', () => {
    const total = (filter: DeviceFilter) => (JSON.parse(devicePageJson(store, filter, 1, 0)) as { total: number }).total;
    expect(total({})).toBe(240);
    expect(total({ q: '"Süd' })).toBeGreaterThan(0);
    expect(total({ q: 'back\\sl' })).toBeGreaterThan(0);
    expect(total({ q: 'press', fallback: gateway })).toBeGreaterThan(60);
    expect(total({ q: 'press' })).toBeLessThan(total({ q: 'press', fallback: gateway }));
    expect(total({ q: 'cell' })).toBe(0);
  });

  it('writes at most eight WHERE texts whatever the filter: each is prepared once and kept (Store.statement)', () => {
    const texts = new Set<string>();
    for (const state of [undefined, 'pending' as const])
      for (const protocol of [undefined, 'mqtt' as const])
        for (const q of [undefined, 'x', '"x', 'press'])
          for (const site of [undefined, 's'])
            for (const line of [undefined, 'l'])
              for (const scope of [undefined, { parts: [{ site: 's' }], fallback: gateway }])
                texts.add(deviceWhere({ state, protocol, q, site, line, scope, fallback: gateway }).where);
    expect(texts.size).toBe(8);
  });

  it('writes a time stored in another form as a Date would be written', () => {
    store.db.prepare("UPDATE devices SET updated_at = '2026-03-04 05:06:07' WHERE id = 'mqtt:dev-001'").run();
    store.db.prepare("UPDATE devices SET last_seen = 'not a time' WHERE id = 'mqtt:dev-002'").run();
    try {
      const filter = { q: 'dev-00' };
      expect(devicePageJson(store, filter, 10, 0)).toBe(previous(filter, 10, 0));
      expect(devicePageJson(store, filter, 10, 0)).toContain('"updatedAt":"2026-03-04T05:06:07.000Z"');
      expect(devicePageJson(store, filter, 10, 0)).toContain('"lastSeen":null');
    } finally {
      store.db
        .prepare(
          "UPDATE devices SET updated_at = '2026-01-01T00:00:00.000Z', last_seen = '2026-01-01T00:00:00.000Z' WHERE id IN ('mqtt:dev-001', 'mqtt:dev-002')",
        )
        .run();
    }
  });
});
