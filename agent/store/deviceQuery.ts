import type { DeviceState, Location, Protocol } from '../inventory/device.js';

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

/** The WHERE clause and its named arguments for a filter (every value bound, never spliced). */
export function deviceWhere(filter: DeviceFilter): { where: string; args: Record<string, string | null> } {
  const fallback = filter.scope?.fallback ?? filter.fallback ?? {};
  const locationOf = (f: (typeof LOCATION)[number]) => `coalesce(json_extract(devices.location, '$.${f}'), @fb_${f})`;
  // A location field is searched as the device's effective value (its own, or the gateway's), never as the stored JSON text.
  const searched = [...SEARCHED.map((c) => `coalesce(${c}, '')`), ...LOCATION.map((f) => `coalesce(${locationOf(f)}, '')`)];
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

/** ORDER BY for a sort: empty values last whichever the direction, the id breaks ties (stable pages). */
export function deviceOrderBy(o: DeviceOrder | undefined): string {
  if (!o) return 'ORDER BY protocol, name';
  const column = DEVICE_SORTS[o.sort];
  const dir = o.order === 'desc' ? 'DESC' : 'ASC';
  return `ORDER BY (${column} IS NULL OR ${column} = '') ASC, ${column} ${dir}, id ${dir}`;
}
