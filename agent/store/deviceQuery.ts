import type { Device, DeviceState, Location, Nameplate, Protocol } from '../inventory/device.js';
import type { Store } from './database.js';

/** The columns a device list may be sorted by (the API's `sort`), and their SQL. */
export const DEVICE_SORTS = {
  id: 'id',
  name: 'name',
  state: 'state',
  protocol: 'protocol',
  manufacturer: 'manufacturer',
  model: 'model',
  assetTag: 'asset_tag',
  lastSeen: 'last_seen',
  firstSeen: 'first_seen',
} as const;
export type DeviceSort = keyof typeof DEVICE_SORTS;

/**
 * Which devices a list shows. `q`: a case-insensitive (ASCII) substring of
 * the id, name, manufacturer, model, serial number, display name, asset tag
 * or a location field. `site`, `area`, `line`: equal to the device's own,
 * or the gateway's (`fallback`) where the device has none, as for `scope`:
 * only devices inside one of its parts, so that counts say nothing of the rest.
 */
export interface DeviceFilter {
  state?: DeviceState;
  protocol?: Protocol;
  q?: string;
  site?: string;
  area?: string;
  line?: string;
  scope?: { parts: readonly Location[]; fallback: Location };
  /** sync.location: where a device without a location of its own is. */
  fallback?: Location;
}

export interface DeviceOrder {
  sort: DeviceSort;
  order: 'asc' | 'desc';
}

const FIELDS = ['site', 'area', 'line'] as const;
const SEARCHED = ['id', 'manufacturer', 'model', 'serial_number', 'display_name', 'asset_tag'];
const LOCATION = ['site', 'area', 'line', 'cell'] as const;

/** `%` `_` and `\` of a search text match themselves. */
const likePattern = (q: string) => `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

/**
 * Characters that JSON.stringify writes escaped (and U+FFFD, what SQLite makes of a lone surrogate):
 * a search text holding one may match a location value without matching the stored JSON text.
 */
const ESCAPED_IN_JSON = /["\\\u0000-\u001f\ud800-\udfff\ufffd]/;
/** Lower case of ASCII letters only, as SQLite's LIKE compares them. */
const asciiLower = (s: string) => s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));

/**
 * The WHERE clause and its named arguments for a filter (every value bound, never spliced). A state or
 * protocol is a condition only when the filter sets it, and the other conditions (search, site, area,
 * line, scope) are written only when it sets one of them (each switched off by a NULL argument): the
 * whole inventory is counted from an index and a state filter uses its index, while the texts stay
 * eight, each prepared once (Store.statement keeps every text it prepares).
 */
export function deviceWhere(filter: DeviceFilter): { where: string; args: Record<string, string | null> } {
  const fallback = filter.scope?.fallback ?? filter.fallback ?? {};
  const clauses: string[] = [];
  const args: Record<string, string | null> = {};
  if (filter.state != null) {
    clauses.push('state = @state');
    args.state = filter.state;
  }
  if (filter.protocol != null) {
    clauses.push('protocol = @protocol');
    args.protocol = filter.protocol;
  }
  if (filter.q || FIELDS.some((f) => filter[f]) || filter.scope) {
    const locationOf = (f: (typeof LOCATION)[number]) => `coalesce(json_extract(devices.location, '$.${f}'), @fb_${f})`;
    const like = (v: string) => `coalesce(${v}, '') LIKE @q ESCAPE '\\'`;
    // A location field is searched as the device's effective value (its own, or the gateway's), never as the stored JSON text.
    // A device's own value holds the text only if its JSON does (JSON.stringify wrote it): one LIKE on the text spares parsing
    // it four times (@whole, set when that does not hold: a text JSON escapes, or one a gateway's value holds).
    const located = `((@whole IS NOT NULL OR devices.location LIKE @q ESCAPE '\\') AND (${LOCATION.map((f) => like(locationOf(f))).join(' OR ')}))`;
    clauses.push(
      `(@q IS NULL OR ${[...SEARCHED.map(like), located].join(' OR ')})`,
      ...FIELDS.map((f) => `(@${f} IS NULL OR ${locationOf(f)} = @${f})`),
      '(@scope IS NULL OR EXISTS (SELECT 1 FROM json_each(@scope) p WHERE ' +
        FIELDS.map((f) => `(json_extract(p.value, '$.${f}') IS NULL OR ${locationOf(f)} = json_extract(p.value, '$.${f}'))`).join(' AND ') +
        '))',
    );
    const needle = filter.q ? asciiLower(filter.q) : '';
    const gatewayHolds = LOCATION.some((f) => fallback[f] && asciiLower(fallback[f]).includes(needle));
    args.q = filter.q ? likePattern(filter.q) : null;
    args.whole = filter.q && (ESCAPED_IN_JSON.test(filter.q) || gatewayHolds) ? '1' : null;
    args.scope = filter.scope ? JSON.stringify(filter.scope.parts) : null;
    for (const f of FIELDS) args[f] = filter[f] || null;
    for (const f of LOCATION) args[`fb_${f}`] = fallback[f] || null;
  }
  return { where: clauses.length > 0 ? `WHERE ${clauses.join(' AND ')}` : '', args };
}

/** ORDER BY for a sort: empty values last whichever the direction, the id breaks ties (stable pages). */
export function deviceOrderBy(o: DeviceOrder | undefined): string {
  if (!o) return 'ORDER BY protocol, name';
  const column = DEVICE_SORTS[o.sort];
  const dir = o.order === 'desc' ? 'DESC' : 'ASC';
  return `ORDER BY (${column} IS NULL OR ${column} = '') ASC, ${column} ${dir}, id ${dir}`;
}

/** The columns of a device, in the order devicePageJson reads them. */
export const DEVICE_COLUMNS = [
  'id',
  'protocol',
  'name',
  'state',
  'blocked',
  'preapproved',
  'manufacturer',
  'model',
  'serial_number',
  'hardware_revision',
  'firmware_version',
  'display_name',
  'source',
  'certificate_serial',
  'reason',
  'asset_tag',
  'location',
  'online',
  'first_seen',
  'last_seen',
  'revision',
  'updated_at',
] as const;

/**
 * The SQL of one page of a device list: how many devices the filter selects, and the page itself
 * (DEVICE_COLUMNS, named arguments `args` plus `limit` and `offset`). A page past the first or in
 * a sort order is found on row ids first (skipped on the index, or sorted holding only the sort key)
 * and its rows read after: it does not carry every column of the rows it skips (a sort of 10,000
 * devices by name costs a third). CROSS JOIN keeps the page as the outer loop: SQLite's planner
 * would otherwise walk the whole index to spare sorting the hundred rows. The first page in the
 * default order is read directly (the index gives it in order, nothing skipped).
 */
export function devicePageQuery(
  filter: DeviceFilter,
  order: DeviceOrder | undefined,
  offset: number,
): { count: string; rows: string; args: Record<string, string | null> } {
  const { where, args } = deviceWhere(filter);
  const by = deviceOrderBy(order);
  const columns = DEVICE_COLUMNS.map((c) => `devices.${c}`).join(', ');
  return {
    count: `SELECT count(*) AS n FROM devices ${where}`,
    rows:
      offset === 0 && !order
        ? `SELECT ${columns} FROM devices ${where} ${by} LIMIT @limit OFFSET @offset`
        : `SELECT ${columns} FROM (SELECT devices.rowid AS k FROM devices ${where} ${by} LIMIT @limit OFFSET @offset) AS page ` +
          `CROSS JOIN devices ON devices.rowid = page.k ${by}`,
    args,
  };
}

/** A device row as read by devicePageQuery: its values in DEVICE_COLUMNS order. */
type RawRow = readonly unknown[];
const AT = Object.fromEntries(DEVICE_COLUMNS.map((c, i) => [c, i])) as Record<(typeof DEVICE_COLUMNS)[number], number>;
const NAMEPLATE: [keyof Nameplate, number][] = [
  ['manufacturer', AT.manufacturer],
  ['model', AT.model],
  ['serialNumber', AT.serial_number],
  ['hardwareRevision', AT.hardware_revision],
  ['firmwareVersion', AT.firmware_version],
  ['displayName', AT.display_name],
];
const str = (v: unknown) => JSON.stringify(v as string);
/** A stored time as a Date in JSON: the stored text itself when it is what toISOString wrote (as every writer does). */
const CANONICAL_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const time = (v: unknown) => (CANONICAL_TIME.test(v as string) ? `"${v as string}"` : JSON.stringify(new Date(v as string)));

/**
 * Each field of a Device as JSON text from its row (undefined: the field is absent), in the order
 * toDevice (deviceRepository.ts) builds it, so the text is JSON.stringify(toDevice(row)) byte for byte
 * (test/unit/devicePage.test.ts holds them together; a field added to Device fails to compile here).
 * `source` and `location` hold JSON.stringify's own text (DeviceRepository.apply writes them), which
 * parsing and writing again would give back unchanged: they go as they are.
 */
const FIELD_JSON: { [K in keyof Device]-?: (r: RawRow) => string | undefined } = {
  id: (r) => str(r[AT.id]),
  protocol: (r) => str(r[AT.protocol]),
  name: (r) => str(r[AT.name]),
  state: (r) => str(r[AT.state]),
  blocked: (r) => (r[AT.blocked] === 1 ? 'true' : 'false'),
  preapproved: (r) => (r[AT.preapproved] === 1 ? 'true' : 'false'),
  nameplate: (r) => {
    let out = '';
    for (const [key, at] of NAMEPLATE) {
      const v = r[at];
      if (typeof v === 'string') out += `${out ? ',' : ''}"${key}":${str(v)}`;
    }
    return `{${out}}`;
  },
  source: (r) => r[AT.source] as string,
  certificateSerial: (r) => (r[AT.certificate_serial] ? str(r[AT.certificate_serial]) : undefined),
  reason: (r) => (r[AT.reason] ? str(r[AT.reason]) : undefined),
  assetTag: (r) => (r[AT.asset_tag] ? str(r[AT.asset_tag]) : undefined),
  location: (r) => (r[AT.location] ? (r[AT.location] as string) : undefined),
  online: (r) => (r[AT.online] === 1 ? 'true' : 'false'),
  firstSeen: (r) => time(r[AT.first_seen]),
  lastSeen: (r) => time(r[AT.last_seen]),
  revision: (r) => JSON.stringify(r[AT.revision]),
  updatedAt: (r) => time(r[AT.updated_at]),
};
const FIELDS_JSON = Object.entries(FIELD_JSON).map(([key, value]) => [`"${key}":`, value] as const);

/** One device row as the JSON of its Device. */
export function deviceJson(r: RawRow): string {
  let out = '';
  for (const [key, value] of FIELDS_JSON) {
    const v = value(r);
    if (v !== undefined) out += `${out ? ',' : '{'}${key}${v}`;
  }
  return `${out}}`;
}

/**
 * One page of the devices a filter selects, as the JSON text of `{ total, items }` (items: Device),
 * what GET /api/v1/devices answers: counted and paged by SQLite, each row written to JSON straight
 * from its values (no Device objects, no Dates). The same answer as JSON.stringify of
 * DeviceRepository.page, at a fraction of its cost.
 */
export function devicePageJson(store: Pick<Store, 'statement'>, filter: DeviceFilter, limit: number, offset: number, order?: DeviceOrder): string {
  const q = devicePageQuery(filter, order, offset);
  const { n } = store.statement(q.count).get(q.args) as { n: number };
  const rows = store
    .statement(q.rows)
    .raw(true)
    .all({ ...q.args, limit, offset }) as RawRow[];
  let items = '';
  for (const r of rows) items += `${items ? ',' : ''}${deviceJson(r)}`;
  return `{"total":${n},"items":[${items}]}`;
}
