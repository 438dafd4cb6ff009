import type BetterSqlite3 from 'better-sqlite3';
import { AgentError, InternalError } from '../errors.js';
import { canTransition, type Device, type DeviceEvent, type DeviceState, type Location, type Nameplate, type Protocol } from '../inventory/device.js';
import type { Store } from './database.js';
import { deviceOrderBy, deviceWhere, type DeviceFilter, type DeviceOrder } from './deviceQuery.js';

export interface DeviceRow {
  id: string;
  protocol: Protocol;
  name: string;
  state: DeviceState;
  blocked: number;
  preapproved: number;
  manufacturer: string | null;
  model: string | null;
  serial_number: string | null;
  hardware_revision: string | null;
  firmware_version: string | null;
  display_name: string | null;
  source: string;
  certificate_serial: string | null;
  reason: string | null;
  asset_tag: string | null;
  location: string | null;
  online: number;
  first_seen: string;
  last_seen: string;
  revision: number;
  updated_at: string;
}

const NAMEPLATE_COLUMNS: Record<keyof Nameplate, string> = {
  manufacturer: 'manufacturer',
  model: 'model',
  serialNumber: 'serial_number',
  hardwareRevision: 'hardware_revision',
  firmwareVersion: 'firmware_version',
  displayName: 'display_name',
};

export function toDevice(r: DeviceRow): Device {
  const nameplate: Nameplate = {};
  for (const [key, column] of Object.entries(NAMEPLATE_COLUMNS)) {
    const v = r[column as keyof DeviceRow];
    if (typeof v === 'string') nameplate[key as keyof Nameplate] = v;
  }
  return {
    id: r.id,
    protocol: r.protocol,
    name: r.name,
    state: r.state,
    blocked: r.blocked === 1,
    preapproved: r.preapproved === 1,
    nameplate,
    source: JSON.parse(r.source) as Record<string, unknown>,
    ...(r.certificate_serial ? { certificateSerial: r.certificate_serial } : {}),
    ...(r.reason ? { reason: r.reason } : {}),
    ...(r.asset_tag ? { assetTag: r.asset_tag } : {}),
    ...(r.location ? { location: JSON.parse(r.location) as Location } : {}),
    online: r.online === 1,
    firstSeen: new Date(r.first_seen),
    lastSeen: new Date(r.last_seen),
    revision: r.revision,
    updatedAt: new Date(r.updated_at),
  };
}

/** What a change sets besides the state; undefined leaves a field as it is, null clears it. */
export interface DevicePatch {
  nameplate?: Nameplate;
  /** Fill only the nameplate fields that are still empty (announcements must not overwrite an enrollment). */
  fillNameplate?: Nameplate;
  source?: Record<string, unknown>;
  certificateSerial?: string | null;
  reason?: string | null;
  assetTag?: string | null;
  /** Replaces the device's location as a whole; null or {} clears it. */
  location?: Location | null;
  blocked?: boolean;
  preapproved?: boolean;
  online?: boolean;
}

export interface Transition {
  protocol: Protocol;
  name: string;
  to: DeviceState;
  cause: string;
  actor: string;
  details?: Record<string, unknown>;
  patch?: DevicePatch;
  at?: Date;
  /** False for a change that is no sign of the device (a technician's annotation): last seen stays. */
  seen?: boolean;
  /** When the device was seen, if not `at` (an accepted request decided later): last seen never moves back. */
  seenAt?: Date;
}

/** A change the device state machine does not allow (inventory/device.ts). */
export class TransitionError extends AgentError {
  readonly code = 'INVALID_TRANSITION' as const;
}

/**
 * The inventory on SQLite. Every change goes through `apply()`, which checks
 * the state machine, bumps the revision and writes the audit row in the same
 * transaction; callers wrap it in `store.transaction()` or `store.durable()`
 * together with what else belongs to the same change.
 */
export class DeviceRepository {
  /** `changed` hears of every committed change of a record (after its commit): the daemon tells the bus, a command nobody. */
  constructor(
    private readonly store: Store,
    private readonly changed?: (deviceId: string) => void,
  ) {}

  /** Tells `changed` of the device once the transaction under way commits (never if it rolls back). */
  private told(id: string): void {
    const changed = this.changed;
    if (changed) this.store.afterCommit(`device.changed:${id}`, () => changed(id));
  }

  private sql(text: string): BetterSqlite3.Statement {
    return this.store.statement(text);
  }

  get(id: string): Device | undefined {
    const row = this.sql('SELECT * FROM devices WHERE id = ?').get(id) as DeviceRow | undefined;
    return row ? toDevice(row) : undefined;
  }

  /** A device's state alone: a cheap read inside a commit. */
  stateOf(id: string): DeviceState | undefined {
    return (this.sql('SELECT state FROM devices WHERE id = ?').get(id) as { state: DeviceState } | undefined)?.state;
  }

  byName(protocol: Protocol, name: string): Device | undefined {
    const row = this.sql('SELECT * FROM devices WHERE protocol = ? AND name = ?').get(protocol, name) as DeviceRow | undefined;
    return row ? toDevice(row) : undefined;
  }

  /** One page of the devices a filter selects, and how many it selects in all: the paging is done by SQLite, not in memory. */
  page(filter: DeviceFilter, limit: number, offset: number, order?: DeviceOrder): { total: number; items: Device[] } {
    const { where, args } = deviceWhere(filter);
    const total = (this.sql(`SELECT count(*) AS n FROM devices ${where}`).get(args) as { n: number }).n;
    const rows = this.sql(`SELECT * FROM devices ${where} ${deviceOrderBy(order)} LIMIT @limit OFFSET @offset`).all({ ...args, limit, offset }) as DeviceRow[];
    return { total, items: rows.map(toDevice) };
  }

  /** The devices a filter selects from `offset` on, at most `limit`, in order, without counting them all (an export reads the inventory by slices). */
  slice(filter: DeviceFilter, order: DeviceOrder | undefined, limit: number, offset: number): Device[] {
    const { where, args } = deviceWhere(filter);
    return (this.sql(`SELECT * FROM devices ${where} ${deviceOrderBy(order)} LIMIT @limit OFFSET @offset`).all({ ...args, limit, offset }) as DeviceRow[]).map(
      toDevice,
    );
  }

  /** How many devices a filter selects, by state and by protocol, and how many of them are online. */
  facets(filter: DeviceFilter): { total: number; byState: Record<string, number>; byProtocol: Record<string, number>; online: number } {
    const { where, args } = deviceWhere(filter);
    const rows = this.sql(`SELECT state, protocol, online, count(*) AS n FROM devices ${where} GROUP BY state, protocol, online`).all(args) as {
      state: string;
      protocol: string;
      online: number;
      n: number;
    }[];
    const out = { total: 0, byState: {} as Record<string, number>, byProtocol: {} as Record<string, number>, online: 0 };
    for (const r of rows) {
      out.total += r.n;
      out.byState[r.state] = (out.byState[r.state] ?? 0) + r.n;
      out.byProtocol[r.protocol] = (out.byProtocol[r.protocol] ?? 0) + r.n;
      if (r.online === 1) out.online += r.n;
    }
    return out;
  }

  list(filter: { state?: DeviceState; protocol?: Protocol } = {}): Device[] {
    const rows = this.sql(
      'SELECT * FROM devices WHERE (@state IS NULL OR state = @state) AND (@protocol IS NULL OR protocol = @protocol) ORDER BY protocol, name',
    ).all({ state: filter.state ?? null, protocol: filter.protocol ?? null }) as DeviceRow[];
    return rows.map(toDevice);
  }

  countByState(): Record<string, number> {
    const rows = this.sql('SELECT state, count(*) AS n FROM devices GROUP BY state').all() as { state: string; n: number }[];
    return Object.fromEntries(rows.map((r) => [r.state, r.n]));
  }

  events(id: string): DeviceEvent[] {
    const rows = this.sql('SELECT * FROM device_events WHERE device_id = ? ORDER BY id').all(id) as {
      id: number;
      at: string;
      from_state: DeviceState | null;
      to_state: DeviceState;
      cause: string;
      actor: string;
      details: string | null;
    }[];
    return rows.map((r) => ({
      id: r.id,
      at: new Date(r.at),
      ...(r.from_state ? { from: r.from_state } : {}),
      to: r.to_state,
      cause: r.cause,
      actor: r.actor,
      ...(r.details ? { details: JSON.parse(r.details) as Record<string, unknown> } : {}),
    }));
  }

  /**
   * Creates or changes a device and writes the audit row. Must run inside a
   * transaction. A change of state not allowed by the state machine throws
   * TransitionError and the caller's transaction rolls back.
   */
  apply(t: Transition): Device {
    this.change(t);
    return this.get(`${t.protocol}:${t.name}`)!;
  }

  /** apply() without reading the record back: for the paths that do not need it (enrollment, by the thousand). */
  change(t: Transition): void {
    if (!this.store.db.inTransaction) throw new InternalError('DeviceRepository.apply() must run inside a transaction');
    const at = (t.at ?? new Date()).toISOString();
    const id = `${t.protocol}:${t.name}`;
    // Only what the change needs (a whole record costs more to read than the update does to write).
    const before = this.sql('SELECT state, source FROM devices WHERE id = ?').get(id) as { state: DeviceState; source: string } | undefined;
    if (!canTransition(before?.state, t.to)) {
      throw new TransitionError(`device ${id} cannot go from ${before?.state ?? '(new)'} to ${t.to}`);
    }
    const p = t.patch ?? {};
    // Each column the change sets: its expression in an UPDATE, and in the INSERT of a new record.
    const columns: { column: string; update: string; insert: string }[] = [];
    const set = (column: string, update: string, insert = update) => columns.push({ column, update, insert });
    set('state', '@state');
    set('updated_at', '@at');
    const values: Record<string, unknown> = { id, protocol: t.protocol, name: t.name, state: t.to, at, bump: before ? 1 : 0 };
    if (t.seen !== false && t.seenAt !== undefined) {
      set('last_seen', 'max(last_seen, @seenAt)', 'max(@at, @seenAt)');
      values.seenAt = t.seenAt.toISOString();
    } else if (t.seen !== false) set('last_seen', '@at');
    for (const [key, column] of Object.entries(NAMEPLATE_COLUMNS)) {
      const value = p.nameplate?.[key as keyof Nameplate];
      const fill = p.fillNameplate?.[key as keyof Nameplate];
      if (value !== undefined) {
        set(column, `@${column}`);
        values[column] = value;
      } else if (fill !== undefined) {
        set(column, `coalesce(${column}, @${column})`, `@${column}`);
        values[column] = fill;
      }
    }
    if (p.source !== undefined) {
      set('source', '@source');
      values.source = JSON.stringify({ ...(before ? (JSON.parse(before.source) as Record<string, unknown>) : {}), ...p.source });
    }
    const nullable: [keyof DevicePatch, string][] = [
      ['certificateSerial', 'certificate_serial'],
      ['reason', 'reason'],
      ['assetTag', 'asset_tag'],
    ];
    if (p.location !== undefined) {
      set('location', '@location');
      values.location = p.location === null || Object.keys(p.location).length === 0 ? null : JSON.stringify(p.location);
    }
    for (const [key, column] of nullable) {
      if (p[key] !== undefined) {
        set(column, `@${column}`);
        values[column] = p[key];
      }
    }
    for (const [key, column] of [
      ['blocked', 'blocked'],
      ['preapproved', 'preapproved'],
      ['online', 'online'],
    ] as const) {
      if (p[key] !== undefined) {
        set(column, `@${column}`);
        values[column] = p[key] ? 1 : 0;
      }
    }
    if (before) {
      const sets = [...columns.map((c) => `${c.column} = ${c.update}`), 'revision = revision + @bump'];
      this.sql(`UPDATE devices SET ${sets.join(', ')} WHERE id = @id`).run(values);
    } else {
      // A new record is written whole in one INSERT (its revision starts at 1; first and last seen at its time).
      if (!columns.some((c) => c.column === 'last_seen')) set('last_seen', '@at');
      if (!columns.some((c) => c.column === 'source')) set('source', "'{}'");
      const names = ['id', 'protocol', 'name', 'first_seen', ...columns.map((c) => c.column)];
      const exprs = ['@id', '@protocol', '@name', '@at', ...columns.map((c) => c.insert)];
      this.sql(`INSERT INTO devices (${names.join(', ')}) VALUES (${exprs.join(', ')})`).run(values);
    }
    this.sql('INSERT INTO device_events (device_id, at, from_state, to_state, cause, actor, details) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
      id,
      at,
      before?.state ?? null,
      t.to,
      t.cause,
      t.actor,
      t.details ? JSON.stringify(t.details) : null,
    );
    this.told(id);
  }

  /**
   * Marks a device offline (a discovery run that covers its address did not
   * find it) without an audit row; last seen stays, since it was not seen.
   * The revision moves when online changes, so the sync sends it. Returns
   * whether it was online.
   */
  offline(id: string, at: Date = new Date()): boolean {
    const went =
      this.sql('UPDATE devices SET online = 0, revision = revision + 1, updated_at = ? WHERE id = ? AND online = 1').run(at.toISOString(), id).changes > 0;
    if (went) this.told(id);
    return went;
  }

  /**
   * Last seen and online without an audit row: a device that announces
   * itself every minute must not grow the audit table. The revision still
   * moves when online changes, so the sync sees it.
   */
  touch(id: string, online: boolean, at: Date = new Date()): void {
    const was = this.sql('SELECT online FROM devices WHERE id = ?').get(id) as { online: number } | undefined;
    this.sql(
      'UPDATE devices SET last_seen = ?, online = ?, revision = revision + (online != ?), ' +
        'updated_at = CASE WHEN online != ? THEN ? ELSE updated_at END WHERE id = ?',
    ).run(at.toISOString(), online ? 1 : 0, online ? 1 : 0, online ? 1 : 0, at.toISOString(), id);
    // After the write: outside a transaction, afterCommit runs at once.
    if (was !== undefined && was.online !== (online ? 1 : 0)) this.told(id);
  }
}
