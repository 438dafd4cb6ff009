import { InternalError } from '../errors.js';
import type { Protocol } from '../inventory/device.js';
import type { ProfileDocument } from '../configuration/profileDocument.js';
import type { ConfigStatus } from '../configuration/types.js';
import type { Store } from './database.js';

/** One stored version of a profile. */
export interface ProfileVersion {
  name: string;
  version: number;
  protocol: Protocol;
  document: ProfileDocument;
  sha256: string;
  createdAt: Date;
  createdBy: string;
}

/** A profile as listed: its head (the version in force) and its latest version. */
export interface ProfileSummary {
  name: string;
  protocol: Protocol;
  head: number;
  latest: number;
  description?: string;
  headUpdatedAt: Date;
  headUpdatedBy: string;
  devices: Partial<Record<ConfigStatus, number>>;
}

/** A device's configuration record (migration 0013). */
export interface DeviceConfigRow {
  deviceId: string;
  pinnedProfile?: string;
  profile?: string;
  desiredVersion?: number;
  desiredSha256?: string;
  desiredAt?: Date;
  publishedVersion?: number;
  publishedAt?: Date;
  reportedVersion?: number;
  reportedSha256?: string;
  reportedAt?: Date;
  status: ConfigStatus;
  error?: string;
  attempts: number;
  nextAttemptAt?: Date;
  checkedAt?: Date;
  updatedAt: Date;
}

export interface ConfigLogEntry {
  id: number;
  profile?: string;
  version?: number;
  event: string;
  detail?: string;
  at: Date;
}

/** Columns of device_config a change may set (snake case, as stored); undefined leaves one as it is. */
export interface DeviceConfigPatch {
  pinned_profile?: string | null;
  profile?: string | null;
  desired_version?: number | null;
  desired_sha256?: string | null;
  desired_at?: string | null;
  published_version?: number | null;
  published_at?: string | null;
  reported_version?: number | null;
  reported_sha256?: string | null;
  reported_at?: string | null;
  status?: ConfigStatus;
  error?: string | null;
  attempts?: number;
  next_attempt_at?: string | null;
  checked_at?: string | null;
}

type Raw = Record<string, string | number | null>;

/** How many of a device's latest history rows are kept (older ones: only what wasSent() needs). */
export const LOG_KEEP = 200;
/** How far back a repeated row is looked for (a repeat is moved to the end, not added). */
export const LOG_CYCLE = 3;

interface LogRow {
  profile: string | null;
  version: number | null;
  event: string;
  detail: string | null;
}

const date = (v: string | number | null | undefined) => (typeof v === 'string' ? new Date(v) : undefined);
const opt = <K extends string, V>(key: K, v: V | null | undefined): Partial<Record<K, V>> =>
  v === null || v === undefined ? {} : ({ [key]: v } as Record<K, V>);

function toRow(r: Raw): DeviceConfigRow {
  return {
    deviceId: r.device_id as string,
    ...opt('pinnedProfile', r.pinned_profile as string | null),
    ...opt('profile', r.profile as string | null),
    ...opt('desiredVersion', r.desired_version as number | null),
    ...opt('desiredSha256', r.desired_sha256 as string | null),
    ...opt('desiredAt', date(r.desired_at)),
    ...opt('publishedVersion', r.published_version as number | null),
    ...opt('publishedAt', date(r.published_at)),
    ...opt('reportedVersion', r.reported_version as number | null),
    ...opt('reportedSha256', r.reported_sha256 as string | null),
    ...opt('reportedAt', date(r.reported_at)),
    status: r.status as ConfigStatus,
    ...opt('error', r.error as string | null),
    attempts: r.attempts as number,
    ...opt('nextAttemptAt', date(r.next_attempt_at)),
    ...opt('checkedAt', date(r.checked_at)),
    updatedAt: new Date(r.updated_at as string),
  };
}

const toVersion = (r: Raw): ProfileVersion => ({
  name: r.name as string,
  version: r.version as number,
  protocol: r.protocol as Protocol,
  document: JSON.parse(r.document as string) as ProfileDocument,
  sha256: r.sha256 as string,
  createdAt: new Date(r.created_at as string),
  createdBy: r.created_by as string,
});

const PATCH_COLUMNS = new Set<string>([
  'pinned_profile',
  'profile',
  'desired_version',
  'desired_sha256',
  'desired_at',
  'published_version',
  'published_at',
  'reported_version',
  'reported_sha256',
  'reported_at',
  'status',
  'error',
  'attempts',
  'next_attempt_at',
  'checked_at',
]);

/**
 * Configuration profiles, their heads, device labels and each device's
 * configuration record with its history (migration 0013). A version is
 * never changed once written. A change of a device's profile, version or
 * status bumps its `devices.revision` in the same transaction (so the
 * upstream record follows) and tells `changed` after the commit. The
 * history is bounded (logEvent, prune).
 */
export class ConfigRepository {
  constructor(
    private readonly store: Store,
    private readonly changed?: (deviceId: string) => void,
  ) {}

  private inTransaction(what: string): void {
    if (!this.store.db.inTransaction) throw new InternalError(`ConfigRepository.${what}() must run inside a transaction`);
  }

  // ---- profiles

  head(name: string): ProfileVersion | undefined {
    const r = this.store
      .statement('SELECT p.* FROM config_profile_heads h JOIN config_profiles p ON p.name = h.name AND p.version = h.version WHERE h.name = ?')
      .get(name) as Raw | undefined;
    return r ? toVersion(r) : undefined;
  }

  /** Every profile's head: what the desired state is computed from. */
  heads(): ProfileVersion[] {
    return (
      this.store
        .statement('SELECT p.* FROM config_profile_heads h JOIN config_profiles p ON p.name = h.name AND p.version = h.version ORDER BY h.name')
        .all() as Raw[]
    ).map(toVersion);
  }

  version(name: string, version: number): ProfileVersion | undefined {
    const r = this.store.statement('SELECT * FROM config_profiles WHERE name = ? AND version = ?').get(name, version) as Raw | undefined;
    return r ? toVersion(r) : undefined;
  }

  versions(name: string): Omit<ProfileVersion, 'document'>[] {
    return (
      this.store
        .statement('SELECT name, version, protocol, sha256, created_at, created_by FROM config_profiles WHERE name = ? ORDER BY version')
        .all(name) as Raw[]
    ).map((r) => ({
      name: r.name as string,
      version: r.version as number,
      protocol: r.protocol as Protocol,
      sha256: r.sha256 as string,
      createdAt: new Date(r.created_at as string),
      createdBy: r.created_by as string,
    }));
  }

  latest(name: string): number | undefined {
    return (this.store.statement('SELECT max(version) AS v FROM config_profiles WHERE name = ?').get(name) as { v: number | null }).v ?? undefined;
  }

  /** Stores a new version and moves the head to it. Must run inside a transaction (with the audit row and the desired states it changes). */
  addVersion(doc: ProfileDocument, sha256: string, actor: string, at = new Date()): number {
    this.inTransaction('addVersion');
    const version = (this.latest(doc.name) ?? 0) + 1;
    const when = at.toISOString();
    this.store
      .statement('INSERT INTO config_profiles (name, version, protocol, document, sha256, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(doc.name, version, doc.protocol, JSON.stringify(doc), sha256, when, actor);
    this.moveHead(doc.name, version, actor, at);
    return version;
  }

  /** Points the profile's head at one of its versions (a rollback). */
  moveHead(name: string, version: number, actor: string, at = new Date()): void {
    this.store
      .statement(
        `INSERT INTO config_profile_heads (name, version, updated_at, updated_by) VALUES (?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at, updated_by = excluded.updated_by`,
      )
      .run(name, version, at.toISOString(), actor);
  }

  list(): ProfileSummary[] {
    const rows = this.store
      .statement(
        `SELECT h.name, h.version AS head, h.updated_at, h.updated_by, p.protocol, p.document,
           (SELECT max(version) FROM config_profiles WHERE name = h.name) AS latest
         FROM config_profile_heads h JOIN config_profiles p ON p.name = h.name AND p.version = h.version ORDER BY h.name`,
      )
      .all() as Raw[];
    const counts = this.store
      .statement('SELECT profile, status, count(*) AS n FROM device_config WHERE profile IS NOT NULL GROUP BY profile, status')
      .all() as {
      profile: string;
      status: ConfigStatus;
      n: number;
    }[];
    return rows.map((r) => {
      const doc = JSON.parse(r.document as string) as ProfileDocument;
      return {
        name: r.name as string,
        protocol: r.protocol as Protocol,
        head: r.head as number,
        latest: r.latest as number,
        ...opt('description', doc.description),
        headUpdatedAt: new Date(r.updated_at as string),
        headUpdatedBy: r.updated_by as string,
        devices: Object.fromEntries(counts.filter((c) => c.profile === r.name).map((c) => [c.status, c.n])),
      };
    });
  }

  // ---- labels

  labels(deviceId: string): Record<string, string> {
    const rows = this.store.statement('SELECT key, value FROM device_labels WHERE device_id = ? ORDER BY key').all(deviceId) as {
      key: string;
      value: string;
    }[];
    return Object.fromEntries(rows.map((r) => [r.key, r.value]));
  }

  allLabels(): Map<string, Record<string, string>> {
    const out = new Map<string, Record<string, string>>();
    for (const r of this.store.statement('SELECT device_id, key, value FROM device_labels ORDER BY device_id, key').all() as {
      device_id: string;
      key: string;
      value: string;
    }[]) {
      const m = out.get(r.device_id) ?? {};
      m[r.key] = r.value;
      out.set(r.device_id, m);
    }
    return out;
  }

  /** Replaces a device's labels as a whole. */
  setLabels(deviceId: string, labels: Record<string, string>): void {
    this.inTransaction('setLabels');
    this.store.statement('DELETE FROM device_labels WHERE device_id = ?').run(deviceId);
    const insert = this.store.statement('INSERT INTO device_labels (device_id, key, value) VALUES (?, ?, ?)');
    for (const [k, v] of Object.entries(labels)) insert.run(deviceId, k, v);
  }

  // ---- device configuration

  get(deviceId: string): DeviceConfigRow | undefined {
    const r = this.store.statement('SELECT * FROM device_config WHERE device_id = ?').get(deviceId) as Raw | undefined;
    return r ? toRow(r) : undefined;
  }

  all(): DeviceConfigRow[] {
    return (this.store.statement('SELECT * FROM device_config ORDER BY device_id').all() as Raw[]).map(toRow);
  }

  /** Rows with a desired configuration, of devices of one protocol. */
  withDesired(protocol: Protocol): DeviceConfigRow[] {
    return (
      this.store
        .statement(`SELECT c.* FROM device_config c JOIN devices d ON d.id = c.device_id WHERE d.protocol = ? AND c.profile IS NOT NULL ORDER BY c.device_id`)
        .all(protocol) as Raw[]
    ).map(toRow);
  }

  /**
   * Changes a device's record (created if missing), logs `event` (see
   * logEvent: a repeat is not a new row; `replace` makes it take the place
   * of the last row of the same event and version, as retries do) and, when
   * the profile, version or status changes, bumps the device's revision and
   * tells `changed` after the commit. Must run inside a transaction.
   */
  update(
    deviceId: string,
    patch: DeviceConfigPatch,
    event?: { event: string; detail?: string; profile?: string | null; version?: number | null; replace?: boolean },
    at = new Date(),
  ): DeviceConfigRow {
    this.inTransaction('update');
    const when = at.toISOString();
    const before = this.get(deviceId);
    if (!before) this.store.statement("INSERT INTO device_config (device_id, status, updated_at) VALUES (?, 'none', ?)").run(deviceId, when);
    const keys = Object.keys(patch).filter((k) => PATCH_COLUMNS.has(k) && patch[k as keyof DeviceConfigPatch] !== undefined);
    if (keys.length > 0) {
      this.store
        .statement(`UPDATE device_config SET ${keys.map((k) => `${k} = @${k}`).join(', ')}, updated_at = @updated_at WHERE device_id = @device_id`)
        .run({ ...Object.fromEntries(keys.map((k) => [k, patch[k as keyof DeviceConfigPatch]])), updated_at: when, device_id: deviceId });
    }
    const after = this.get(deviceId)!;
    if (event)
      this.logEvent(
        deviceId,
        {
          profile: event.profile !== undefined ? event.profile : (after.profile ?? null),
          version: event.version !== undefined ? event.version : (after.desiredVersion ?? null),
          event: event.event,
          detail: event.detail ?? null,
        },
        when,
        event.replace ?? false,
      );
    const moved = before?.profile !== after.profile || before?.desiredVersion !== after.desiredVersion || (before?.status ?? 'none') !== after.status;
    if (moved) {
      this.store.statement('UPDATE devices SET revision = revision + 1, updated_at = ? WHERE id = ?').run(when, deviceId);
      const changed = this.changed;
      if (changed) this.store.afterCommit(`device.changed:${deviceId}`, () => changed(deviceId));
    }
    return after;
  }

  /**
   * Adds a row to the device's history, bounded: the same row as the last
   * one (or, with `replace`, the last row of the same event, profile and
   * version) only gets the new time (and detail); a repeat of one of the last
   * LOG_CYCLE rows (a server that keeps reverting: drifted, verified,
   * drifted...) is moved to the end with its new time. Then only the last
   * LOG_KEEP rows are kept, and of older ones only what wasSent() needs.
   */
  private logEvent(deviceId: string, e: LogRow, when: string, replace: boolean): void {
    const recent = this.store
      .statement('SELECT id, profile, version, event, detail FROM device_config_log WHERE device_id = ? ORDER BY id DESC LIMIT ?')
      .all(deviceId, LOG_CYCLE) as (LogRow & { id: number })[];
    const same = (r: LogRow) => r.profile === e.profile && r.version === e.version && r.event === e.event;
    const last = recent[0];
    if (last && same(last) && (replace || last.detail === e.detail)) {
      this.store.statement('UPDATE device_config_log SET detail = ?, at = ? WHERE id = ?').run(e.detail, when, last.id);
      return;
    }
    const repeat = recent.find((r) => same(r) && r.detail === e.detail);
    if (repeat) this.store.statement('DELETE FROM device_config_log WHERE id = ?').run(repeat.id);
    this.store
      .statement('INSERT INTO device_config_log (device_id, profile, version, event, detail, at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(deviceId, e.profile, e.version, e.event, e.detail, when);
    this.prune(deviceId);
  }

  /**
   * Deletes the device's rows older than its last LOG_KEEP, except the
   * newest 'published' or 'verified' row of each profile version and
   * SHA-256 (one per version the device was ever sent, which wasSent() reads).
   */
  private prune(deviceId: string): void {
    const cutoff = this.store.statement('SELECT id FROM device_config_log WHERE device_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?').get(deviceId, LOG_KEEP - 1) as
      | { id: number }
      | undefined;
    if (!cutoff) return;
    this.store
      .statement(
        `DELETE FROM device_config_log WHERE device_id = @d AND id < @cutoff AND NOT (event IN ('published', 'verified') AND id = (
           SELECT max(k.id) FROM device_config_log k WHERE k.device_id = @d AND k.profile IS device_config_log.profile
             AND k.version IS device_config_log.version AND k.event IN ('published', 'verified') AND k.detail IS device_config_log.detail))`,
      )
      .run({ d: deviceId, cutoff: cutoff.id });
  }

  /** The device's history, newest last. */
  log(deviceId: string, limit = 50): ConfigLogEntry[] {
    const rows = this.store.statement('SELECT * FROM device_config_log WHERE device_id = ? ORDER BY id DESC LIMIT ?').all(deviceId, limit) as Raw[];
    return rows.reverse().map((r) => ({
      id: r.id as number,
      ...opt('profile', r.profile as string | null),
      ...opt('version', r.version as number | null),
      event: r.event as string,
      ...opt('detail', r.detail as string | null),
      at: new Date(r.at as string),
    }));
  }

  /**
   * Whether this version of the profile (with these values, if `sha256` is
   * given) was ever published or written to the device (the log's detail holds the SHA-256).
   */
  wasSent(deviceId: string, profile: string, version: number, sha256?: string): boolean {
    return (
      this.store
        .statement(
          `SELECT 1 FROM device_config_log WHERE device_id = ? AND profile = ? AND version = ?
           AND event IN ('published', 'verified') AND (? IS NULL OR detail = ?) LIMIT 1`,
        )
        .get(deviceId, profile, version, sha256 ?? null, sha256 ?? null) !== undefined
    );
  }

  /** Pending rows due at `now`, of devices whose protocol has a deliverer, oldest due first. */
  due(now: Date, protocols: readonly Protocol[], limit: number): (DeviceConfigRow & { protocol: Protocol; name: string })[] {
    if (protocols.length === 0 || limit <= 0) return [];
    const rows = this.store
      .statement(
        `SELECT c.*, d.protocol AS d_protocol, d.name AS d_name FROM device_config c JOIN devices d ON d.id = c.device_id
         WHERE c.status = 'pending' AND c.next_attempt_at <= ? AND d.protocol IN (${protocols.map(() => '?').join(', ')})
         ORDER BY c.next_attempt_at, c.device_id LIMIT ?`,
      )
      .all(now.toISOString(), ...protocols, limit) as Raw[];
    return rows.map((r) => ({ ...toRow(r), protocol: r.d_protocol as Protocol, name: r.d_name as string }));
  }

  /** When the next pending row comes due (undefined: none waits). */
  nextDue(protocols: readonly Protocol[]): Date | undefined {
    if (protocols.length === 0) return undefined;
    const r = this.store
      .statement(
        `SELECT min(c.next_attempt_at) AS at FROM device_config c JOIN devices d ON d.id = c.device_id
         WHERE c.status = 'pending' AND c.next_attempt_at IS NOT NULL AND d.protocol IN (${protocols.map(() => '?').join(', ')})`,
      )
      .get(...protocols) as { at: string | null };
    return r.at ? new Date(r.at) : undefined;
  }

  /**
   * At start: every pending row not known to have reached its device (not
   * published at its desired version; OPC UA rows, confirmed only by a read
   * back) is due now. Answers how many.
   */
  dueAtStart(now: Date): number {
    return this.store
      .statement(
        `UPDATE device_config SET next_attempt_at = ? WHERE status = 'pending' AND (published_version IS NULL OR published_version != desired_version
           OR device_id IN (SELECT id FROM devices WHERE protocol = 'opcua'))`,
      )
      .run(now.toISOString()).changes;
  }

  /** Devices whose configuration was withdrawn and may still be published (taken back when their deliverer runs). */
  withdrawals(protocols: readonly Protocol[]): { deviceId: string; name: string; protocol: Protocol }[] {
    if (protocols.length === 0) return [];
    return (
      this.store
        .statement(
          `SELECT c.device_id, d.name, d.protocol FROM device_config c JOIN devices d ON d.id = c.device_id
           WHERE c.profile IS NULL AND c.published_version IS NOT NULL AND d.protocol IN (${protocols.map(() => '?').join(', ')}) ORDER BY c.device_id`,
        )
        .all(...protocols) as { device_id: string; name: string; protocol: Protocol }[]
    ).map((r) => ({ deviceId: r.device_id, name: r.name, protocol: r.protocol }));
  }

  /** How many devices are in each status (rows of devices that never had a profile are not counted). */
  countsByStatus(): Partial<Record<ConfigStatus, number>> {
    const rows = this.store.statement('SELECT status, count(*) AS n FROM device_config GROUP BY status').all() as { status: ConfigStatus; n: number }[];
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }
}
