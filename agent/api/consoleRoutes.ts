import { X509Certificate } from 'node:crypto';
import type { CaService } from '../ca/caService.js';
import type { Config } from '../config/schema.js';
import { once } from 'node:events';
import { DEVICE_STATES as STATES, PROTOCOLS, type Device, type DeviceState, type Location, type Protocol } from '../inventory/device.js';
import { DEVICE_SORTS, type DeviceFilter, type DeviceOrder, type DeviceSort } from '../store/deviceQuery.js';
import type { Repositories } from '../store/repositories.js';
import { readSyncStatus } from '../sync/syncStatus.js';
import { permitted } from './auth.js';
import type { Principal } from './principal.js';
import type { Query, QuerySpec, Route } from './router.js';

/** `n` and the noun's singular or plural, the number with thousands separators ("2,500 devices wait"). */
const count = (n: number, one: string, many: string) => `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;

/** Devices read at once by the CSV export. */
const EXPORT_SLICE = 1_000;

/** How far ahead the overview counts certificates as expiring soon. */
export const EXPIRING_WITHIN_DAYS = 30;

/** The query of a device list and of its export: filters, search and sort (the list adds paging). */
export const DEVICE_QUERY: QuerySpec = {
  state: { kind: 'enum', values: STATES },
  protocol: { kind: 'enum', values: PROTOCOLS },
  q: { kind: 'text', max: 128, what: 'text searched in id, name, manufacturer, model, serial number, asset tag and location' },
  site: { kind: 'text', max: 128, what: 'a site (exact)' },
  area: { kind: 'text', max: 128, what: 'an area (exact)' },
  line: { kind: 'text', max: 128, what: 'a line (exact)' },
  sort: { kind: 'enum', values: Object.keys(DEVICE_SORTS) },
  order: { kind: 'enum', values: ['asc', 'desc'] },
};

/** The filter and order a device query asks for, inside the caller's scope. */
export function deviceSelection(query: Query, user: Principal, gateway: DeviceFilter['fallback'] & object): { filter: DeviceFilter; order?: DeviceOrder } {
  const filter: DeviceFilter = { fallback: gateway };
  const state = query.text('state') as DeviceState | undefined;
  const protocol = query.text('protocol') as Protocol | undefined;
  if (state) filter.state = state;
  if (protocol) filter.protocol = protocol;
  for (const k of ['q', 'site', 'area', 'line'] as const) {
    const v = query.text(k);
    if (v) filter[k] = v;
  }
  if (user.scope) filter.scope = { parts: user.scope, fallback: gateway };
  const sort = query.text('sort') as DeviceSort | undefined;
  return { filter, ...(sort ? { order: { sort, order: query.text('order') === 'desc' ? 'desc' : 'asc' } } : {}) };
}

const CSV_COLUMNS = 'id,protocol,name,state,manufacturer,model,serial,assetTag,site,area,line,cell,online,firstSeen,lastSeen,certificateSerial';

/**
 * One CSV field (RFC 4180): quoted when it holds a comma, quote or line break. A field a spreadsheet
 * would run as a formula (= + - @, tab, CR first) gets a leading apostrophe: device names come from devices.
 */
export function csvField(value: string): string {
  const safe = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/** One device as a CSV line; its location fields are its own, or the gateway's (`fallback`, sync.location) where it has none. */
export function csvRow(d: Device, fallback: Location = {}): string {
  const l = { ...Object.fromEntries(Object.entries(fallback).filter(([, v]) => v)), ...d.location } as Location;
  const n = d.nameplate;
  return [
    d.id,
    d.protocol,
    d.name,
    d.state,
    n.manufacturer ?? '',
    n.model ?? '',
    n.serialNumber ?? '',
    d.assetTag ?? '',
    l.site ?? '',
    l.area ?? '',
    l.line ?? '',
    l.cell ?? '',
    d.online ? 'yes' : 'no',
    d.firstSeen.toISOString(),
    d.lastSeen.toISOString(),
    d.certificateSerial ?? '',
  ]
    .map(csvField)
    .join(',');
}

export interface ConsoleRouteDeps {
  config: () => Config;
  repos: Pick<Repositories, 'devices' | 'certificates' | 'sync' | 'discoveryRuns'>;
  ca: Pick<CaService, 'chainPem'>;
  /** Where devices and commissioning apps reach the broker (empty when MQTT is off). */
  brokers: () => { url: string; purpose: string }[];
}

/** SHA-256 fingerprints (AA:BB:… as openssl prints them) of the self-signed CAs of a PEM bundle: the roots a device pins. */
export function rootFingerprints(bundle: string): string[] {
  const pems = bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return pems
    .map((pem) => new X509Certificate(pem))
    .filter((c) => c.subject === c.issuer)
    .map((c) => c.fingerprint256);
}

/** Routes the console needs beyond the rest of the API: the overview, the onboarding facts and the CSV export. */
export function consoleRoutes(deps: ConsoleRouteDeps): Route[] {
  const gateway = () => deps.config().sync.location;
  return [
    {
      method: 'GET',
      path: '/api/v1/overview',
      permission: 'devices.read',
      summary: "the console's first page: devices by state and protocol, discovery runs, and (by role) sync health, expiring certificates and alarms",
      handle: ({ user }) => {
        const devices = deps.repos.devices.facets({ fallback: gateway(), ...(user.scope ? { scope: { parts: user.scope, fallback: gateway() } } : {}) });
        const alarms: { code: string; severity: 'warning' | 'critical'; message: string; link?: string }[] = [];
        const pending = devices.byState.pending ?? 0;
        if (pending > 0)
          alarms.push({
            code: 'PENDING_APPROVAL',
            severity: 'warning',
            message: `${count(pending, 'device waits', 'devices wait')} for approval`,
            link: '#/devices?state=pending',
          });
        const body: Record<string, unknown> = { devices };
        // Runs name their targets and who started them: only for those who may read runs (a scoped user: their own, as GET /api/v1/discovery/runs).
        if (permitted(user, 'discovery.read')) {
          const actor = user.scope ? user.name : undefined;
          body.runs = { active: deps.repos.discoveryRuns.activeCount(actor), recent: deps.repos.discoveryRuns.page(5, 0, actor).items };
        }
        if (permitted(user, 'sync.read')) {
          const s = readSyncStatus(deps.repos.sync, deps.config());
          body.sync = s;
          if (s.enabled && s.stuck)
            alarms.push({
              code: 'SYNC_STUCK',
              severity: 'critical',
              message: `${count(s.stuck.batches, 'batch', 'batches')} not accepted by the CMMS since ${s.stuck.since}`,
            });
          if (s.deadLetters > 0)
            alarms.push({
              code: 'SYNC_DEAD_LETTERS',
              severity: 'warning',
              message: `${count(s.deadLetters, 'record', 'records')} refused by the CMMS: see the sync dead letters`,
            });
          if (s.enabled && s.paused) alarms.push({ code: 'SYNC_PAUSED', severity: 'critical', message: `sync paused: ${s.paused}` });
        }
        if (permitted(user, 'certificates.read')) {
          const now = new Date();
          const before = new Date(now.getTime() + EXPIRING_WITHIN_DAYS * 86_400_000);
          // Valid (not revoked or superseded) and ending before `before`: those that have ended already are said apart.
          const ending = deps.repos.certificates.list({ expiringBefore: before, limit: 1_000_000 });
          const expired = ending.filter((c) => c.notAfter <= now).length;
          const expiringSoon = ending.length - expired;
          body.certificates = { valid: deps.repos.certificates.countValid(now), expiringSoon, expired, before: before.toISOString() };
          if (expiringSoon > 0)
            alarms.push({
              code: 'CERTIFICATES_EXPIRING',
              severity: 'warning',
              message: `${count(expiringSoon, 'certificate expires', 'certificates expire')} within ${EXPIRING_WITHIN_DAYS} days`,
            });
          if (expired > 0)
            alarms.push({
              code: 'CERTIFICATES_EXPIRED',
              severity: 'critical',
              message: `${count(expired, 'certificate still in use has', 'certificates still in use have')} expired: renew or revoke them`,
            });
        }
        body.alarms = alarms;
        return { body };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/onboarding',
      permission: 'devices.enroll',
      summary: 'what a device or commissioning app needs beside an enrollment token: the broker URLs and the SHA-256 of the gateway root CA',
      handle: () => ({ body: { brokers: deps.brokers(), caFingerprints: rootFingerprints(deps.ca.chainPem()), caChainUrl: '/ca/chain' } }),
    },
    {
      method: 'GET',
      path: '/api/v1/exports/devices.csv',
      permission: 'devices.read',
      summary: 'the devices a filter selects (as GET /api/v1/devices, without paging) as CSV',
      query: DEVICE_QUERY,
      handle: async ({ query, user, res }) => {
        const { filter, order } = deviceSelection(query, user, gateway());
        res.writeHead(200, {
          'content-type': 'text/csv; charset=utf-8',
          'content-disposition': 'attachment; filename="devices.csv"',
          'cache-control': 'no-store',
        });
        // A byte order mark first: spreadsheets then read the names (Ölpumpe, Müller) as UTF-8.
        let chunk = `\uFEFF${CSV_COLUMNS}\r\n`;
        // Read by slices, sent as the client takes them: never the whole inventory in memory, other requests served in between
        // (no SQLite statement stays open across a wait: the connection is shared).
        for (let offset = 0; ; offset += EXPORT_SLICE) {
          const devices = deps.repos.devices.slice(filter, order, EXPORT_SLICE, offset);
          for (const d of devices) chunk += `${csvRow(d, gateway())}\r\n`;
          if (devices.length < EXPORT_SLICE) break;
          const more = res.write(chunk);
          chunk = '';
          if (!more) await Promise.race([once(res, 'drain'), once(res, 'close')]);
          else await new Promise((resolve) => setImmediate(resolve));
          if (res.destroyed) return undefined;
        }
        res.end(chunk);
        return undefined;
      },
    },
  ];
}
