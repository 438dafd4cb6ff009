import type { Device } from '../inventory/device.js';
import type { Store } from './database.js';
import { toDevice, type DeviceRow } from './deviceRepository.js';
import { EventOutboxRepository } from './eventOutboxRepository.js';

export interface OutboxEntry {
  deviceId: string;
  revision: number;
}

export interface StoredBatch {
  key: string;
  createdAt: Date;
  /** The items' devices and revisions, in the body's order. */
  items: OutboxEntry[];
  /** The request body exactly as sent (and sent again, under the same key). */
  body: string;
  attempts: number;
}

export interface DeadLetter {
  deviceId: string;
  revision: number;
  status?: number;
  error: string;
  at: Date;
}

/** One device's place in the upstream sync (`devices show`, the console's device page). */
export type DeviceSync =
  | { state: 'synced' }
  /** sync.enabled is false (said by the API and the CLI, which know the configuration). */
  | { state: 'off' }
  | { state: 'waiting'; revision: number; since: Date; sending: boolean }
  | { state: 'refused'; revision: number; since: Date; error: string; status?: number };

/**
 * A device's configuration as the upstream record carries it (device_config,
 * migration 0013): the profile and version the agent wants it to run, and
 * whether it does. Null for a device without one (no row, status `none`).
 */
export interface ConfigurationSummary {
  profile: string;
  version: number;
  status: 'pending' | 'in_sync' | 'drifted' | 'failed';
}

/** A device waiting to be sent, and the configuration its record carries. */
export interface AwaitingDevice {
  device: Device;
  configuration: ConfigurationSummary | null;
}

/**
 * The upstream sync's tables (migration 0006): the outbox (written by
 * triggers on `devices`), batches stored before they are sent, dead letters
 * and a little state (last success, pause, requests from the CLI); and,
 * through `events`, the outbox of the events (migration 0014).
 */
export class SyncRepository {
  /** The events sent upstream beside the devices (report_events). */
  readonly events: EventOutboxRepository;

  constructor(private readonly store: Store) {
    this.events = new EventOutboxRepository(store);
  }

  /**
   * The devices whose revision waits in the sync outbox and in no stored
   * batch, longest-waiting first, at their current state, with their
   * configuration. It reads the sync tables, so it lives with them; the rows
   * are mapped as the inventory maps them.
   */
  awaitingSync(limit: number): AwaitingDevice[] {
    const rows = this.store
      .statement(
        `SELECT d.*, c.profile AS config_profile, c.desired_version AS config_version, c.status AS config_status
       FROM sync_outbox o JOIN devices d ON d.id = o.device_id LEFT JOIN device_config c ON c.device_id = d.id
       WHERE o.device_id NOT IN (SELECT j.value ->> '$.deviceId' FROM sync_batches b, json_each(b.items) j)
       ORDER BY o.queued_at, o.device_id LIMIT ?`,
      )
      .all(limit) as (DeviceRow & { config_profile: string | null; config_version: number | null; config_status: string | null })[];
    return rows.map((r) => ({
      device: toDevice(r),
      // Without a profile and version there is nothing to name (status none: no profile applies to the device).
      configuration:
        r.config_status && r.config_status !== 'none' && r.config_profile !== null && r.config_version !== null
          ? { profile: r.config_profile, version: r.config_version, status: r.config_status as ConfigurationSummary['status'] }
          : null,
    }));
  }

  outboxSize(): number {
    return (this.store.statement('SELECT count(*) AS n FROM sync_outbox').get() as { n: number }).n;
  }

  /** Queues a device's revision (reconciliation, dead letters retried): kept if a newer one waits already. */
  queue(deviceId: string, revision: number): void {
    this.store
      .statement(
        `INSERT INTO sync_outbox (device_id, revision, queued_at) VALUES (?, ?, ?)
         ON CONFLICT (device_id) DO UPDATE SET revision = max(revision, excluded.revision)`,
      )
      .run(deviceId, revision, new Date().toISOString());
  }

  /** The receiver holds this revision (applied or stale): the entry leaves unless a newer revision was queued since, and an older dead letter is done with. */
  acknowledge(deviceId: string, revision: number): void {
    this.store.statement('DELETE FROM sync_outbox WHERE device_id = ? AND revision <= ?').run(deviceId, revision);
    this.store.statement('DELETE FROM sync_dead_letters WHERE device_id = ? AND revision < ?').run(deviceId, revision);
  }

  /** Sets a device's revision to at least `revision` (the outbox trigger queues it). */
  raiseRevision(deviceId: string, revision: number): void {
    this.store.statement('UPDATE devices SET revision = max(revision, ?) WHERE id = ?').run(revision, deviceId);
  }

  /** Deletes a state key only if it still holds `value` (a request the CLI made again meanwhile is kept). */
  clearState(key: string, value: unknown): void {
    this.store.statement('DELETE FROM sync_state WHERE key = ? AND value = ?').run(key, JSON.stringify(value));
  }

  deadLetter(deviceId: string, revision: number, status: number | undefined, error: string): void {
    this.store
      .statement(
        `INSERT INTO sync_dead_letters (device_id, revision, status, error, at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (device_id) DO UPDATE SET revision = excluded.revision, status = excluded.status, error = excluded.error, at = excluded.at`,
      )
      .run(deviceId, revision, status ?? null, error.slice(0, 2_000), new Date().toISOString());
    this.store.statement('DELETE FROM sync_outbox WHERE device_id = ? AND revision <= ?').run(deviceId, revision);
  }

  deadLetters(limit = 1_000): DeadLetter[] {
    const rows = this.store.statement('SELECT * FROM sync_dead_letters ORDER BY at, device_id LIMIT ?').all(limit) as {
      device_id: string;
      revision: number;
      status: number | null;
      error: string;
      at: string;
    }[];
    return rows.map((r) => ({
      deviceId: r.device_id,
      revision: r.revision,
      ...(r.status !== null ? { status: r.status } : {}),
      error: r.error,
      at: new Date(r.at),
    }));
  }

  /**
   * Where one device stands with the receiver: `waiting` (a revision in the outbox, since when, and whether
   * it is in a batch being sent), `refused` (a dead letter, with the receiver's reason) or `synced` (nothing waits).
   */
  deviceSync(deviceId: string): DeviceSync {
    const dead = this.store.statement('SELECT revision, status, error, at FROM sync_dead_letters WHERE device_id = ?').get(deviceId) as
      | { revision: number; status: number | null; error: string; at: string }
      | undefined;
    const waiting = this.store.statement('SELECT revision, queued_at FROM sync_outbox WHERE device_id = ?').get(deviceId) as
      | { revision: number; queued_at: string }
      | undefined;
    if (waiting) {
      const sending = this.store
        .statement("SELECT 1 AS x FROM sync_batches b, json_each(b.items) j WHERE j.value ->> '$.deviceId' = ? LIMIT 1")
        .get(deviceId) as { x: number } | undefined;
      return { state: 'waiting', revision: waiting.revision, since: new Date(waiting.queued_at), sending: sending !== undefined };
    }
    if (dead)
      return {
        state: 'refused',
        revision: dead.revision,
        since: new Date(dead.at),
        error: dead.error,
        ...(dead.status !== null ? { status: dead.status } : {}),
      };
    return { state: 'synced' };
  }

  deadLetterCount(): number {
    return (this.store.statement('SELECT count(*) AS n FROM sync_dead_letters').get() as { n: number }).n;
  }

  /** Every dead letter back into the outbox at its device's current revision; returns how many. */
  retryDeadLetters(): number {
    return this.store.transaction(() => {
      const n = this.store
        .statement(
          `INSERT INTO sync_outbox (device_id, revision, queued_at)
           SELECT d.id, d.revision, ? FROM sync_dead_letters l JOIN devices d ON d.id = l.device_id WHERE true
           ON CONFLICT (device_id) DO UPDATE SET revision = max(revision, excluded.revision)`,
        )
        .run(new Date().toISOString()).changes;
      this.store.statement('DELETE FROM sync_dead_letters').run();
      return n;
    });
  }

  /** `createdAt`: when the first batch these items went in was made (the halves of a split keep it, for order and the stuck alarm). */
  storeBatch(key: string, items: OutboxEntry[], body: string, createdAt = new Date()): void {
    this.store
      .statement('INSERT INTO sync_batches (key, created_at, items, body) VALUES (?, ?, ?, ?)')
      .run(key, createdAt.toISOString(), JSON.stringify(items), body);
  }

  /** The stored batches' keys, oldest first, without reading their bodies. */
  batchKeys(): string[] {
    return (this.store.statement('SELECT key FROM sync_batches ORDER BY created_at, key').all() as { key: string }[]).map((r) => r.key);
  }

  batch(key: string): StoredBatch | undefined {
    const r = this.store.statement('SELECT * FROM sync_batches WHERE key = ?').get(key) as
      | { key: string; created_at: string; items: string; body: string; attempts: number }
      | undefined;
    return r && { key: r.key, createdAt: new Date(r.created_at), items: JSON.parse(r.items) as OutboxEntry[], body: r.body, attempts: r.attempts };
  }

  /** Batches made before `before` and still unanswered: how many, and since when the oldest waits. */
  batchesOlderThan(before: Date): { count: number; since?: Date } {
    const r = this.store.statement('SELECT count(*) AS n, min(created_at) AS oldest FROM sync_batches WHERE created_at < ?').get(before.toISOString()) as {
      n: number;
      oldest: string | null;
    };
    return { count: r.n, ...(r.oldest ? { since: new Date(r.oldest) } : {}) };
  }

  /** The devices waiting in the outbox (for reconciliation: a device waiting to be sent has not diverged). */
  outboxDevices(): Set<string> {
    return new Set((this.store.statement('SELECT device_id FROM sync_outbox').all() as { device_id: string }[]).map((r) => r.device_id));
  }

  batches(): StoredBatch[] {
    const rows = this.store.statement('SELECT * FROM sync_batches ORDER BY created_at, key').all() as {
      key: string;
      created_at: string;
      items: string;
      body: string;
      attempts: number;
    }[];
    return rows.map((r) => ({
      key: r.key,
      createdAt: new Date(r.created_at),
      items: JSON.parse(r.items) as OutboxEntry[],
      body: r.body,
      attempts: r.attempts,
    }));
  }

  countAttempt(key: string): void {
    this.store.statement('UPDATE sync_batches SET attempts = attempts + 1 WHERE key = ?').run(key);
  }

  deleteBatch(key: string): void {
    this.store.statement('DELETE FROM sync_batches WHERE key = ?').run(key);
  }

  /** Every device's current revision (for reconciliation). */
  revisions(): Map<string, number> {
    const rows = this.store.statement('SELECT id, revision FROM devices').all() as { id: string; revision: number }[];
    return new Map(rows.map((r) => [r.id, r.revision]));
  }

  getState<T>(key: string): T | undefined {
    const row = this.store.statement('SELECT value FROM sync_state WHERE key = ?').get(key) as { value: string } | undefined;
    return row ? (JSON.parse(row.value) as T) : undefined;
  }

  setState(key: string, value: unknown): void {
    if (value === undefined) this.store.statement('DELETE FROM sync_state WHERE key = ?').run(key);
    else
      this.store
        .statement('INSERT INTO sync_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value')
        .run(key, JSON.stringify(value));
  }
}
