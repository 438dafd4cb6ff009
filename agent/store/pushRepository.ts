import type { Store } from './database.js';

/**
 * waiting: due at nextAttemptAt; running: an attempt is under way (or was,
 * when the agent stopped); done: the server presents our certificate (nextAttemptAt is its renewal);
 * failed: the last attempt failed, retried at nextAttemptAt; unsupported:
 * the server cannot be pushed to (no secure endpoint, no credentials),
 * looked at again after opcua.push.retryMaxMs; stopped:
 * a technician rejected, revoked or decommissioned the server.
 */
export type PushStatus = 'waiting' | 'running' | 'done' | 'failed' | 'unsupported' | 'stopped';

/** The steps of a push, in order; each is logged as begun, then ok or failed. */
export const PUSH_STEPS = ['connect', 'session', 'csr', 'check-csr', 'issue', 'update', 'trust', 'apply', 'verify'] as const;
/** approved and crl mark why a job came due (an approval; a revocation its server's CRLs lack), not steps. */
export type PushStep = (typeof PUSH_STEPS)[number] | 'approved' | 'crl';

export interface PushJob {
  deviceId: string;
  applicationUri: string;
  /** `policy:<rule>` or `technician:<name>`. */
  approvedBy: string;
  /** The server certificate's thumbprint when it was approved: the push session opens only to that certificate (or ours). */
  approvedThumbprint?: string;
  status: PushStatus;
  /** The last step begun. */
  step: PushStep;
  attempts: number;
  nextAttemptAt?: Date;
  /** The certificate the latest attempt issued (recorded before it left the agent). */
  serial?: string;
  /** The certificate the server was last verified to present (on a session pinned to it). */
  appliedSerial?: string;
  reason?: string;
  /** Whether the server's TrustList holds the gateway's current CRLs (false: not delivered, or a revocation since). */
  crlDelivered?: boolean;
  /** Whether its TrustList takes CRLs over OPC UA (Part 12 Write and CloseAndUpdate); absent until a push has tried. */
  crlWritable?: boolean;
  updatedAt: Date;
}

export interface PushStepRecord {
  id: number;
  attempt: number;
  step: string;
  outcome: 'begun' | 'ok' | 'failed';
  detail?: string;
  at: Date;
}

interface Row {
  device_id: string;
  application_uri: string;
  approved_by: string;
  approved_thumbprint: string | null;
  status: PushStatus;
  step: PushStep;
  attempts: number;
  next_attempt_at: string | null;
  serial: string | null;
  applied_serial: string | null;
  reason: string | null;
  crl_delivered: number | null;
  crl_writable: number | null;
  crl_revocations: string | null;
  updated_at: string;
}

const toJob = (r: Row): PushJob => ({
  deviceId: r.device_id,
  applicationUri: r.application_uri,
  approvedBy: r.approved_by,
  ...(r.approved_thumbprint ? { approvedThumbprint: r.approved_thumbprint } : {}),
  status: r.status,
  step: r.step,
  attempts: r.attempts,
  ...(r.next_attempt_at ? { nextAttemptAt: new Date(r.next_attempt_at) } : {}),
  ...(r.serial ? { serial: r.serial } : {}),
  ...(r.applied_serial ? { appliedSerial: r.applied_serial } : {}),
  ...(r.reason ? { reason: r.reason } : {}),
  ...(r.crl_delivered !== null ? { crlDelivered: r.crl_delivered === 1 } : {}),
  ...(r.crl_writable !== null ? { crlWritable: r.crl_writable === 1 } : {}),
  updatedAt: new Date(r.updated_at),
});

/** Steps kept per server: older ones are deleted when a push finishes. */
const STEPS_KEPT = 200;

/** The OPC UA push jobs and their step log (see migration 0005). */
export class PushRepository {
  constructor(private readonly store: Store) {}

  get(deviceId: string): PushJob | undefined {
    const row = this.store.statement('SELECT * FROM opcua_push_jobs WHERE device_id = ?').get(deviceId) as Row | undefined;
    return row ? toJob(row) : undefined;
  }

  list(): PushJob[] {
    return (this.store.statement('SELECT * FROM opcua_push_jobs ORDER BY device_id').all() as Row[]).map(toJob);
  }

  /** Jobs to run now: those due (a first push, a retry, a renewal, another look at an unsupported server) and those left running by a stop or a crash. */
  due(now: Date, limit: number): PushJob[] {
    return (
      this.store
        .statement(
          `SELECT * FROM opcua_push_jobs WHERE status = 'running' OR (status != 'stopped' AND next_attempt_at <= ?)
           ORDER BY next_attempt_at, device_id LIMIT ?`,
        )
        .all(now.toISOString(), limit) as Row[]
    ).map(toJob);
  }

  /** Records an approval: a new job, or a job started again (renewal, a technician's second approval). */
  approve(deviceId: string, applicationUri: string, approvedBy: string, thumbprint: string | undefined, reason: string): PushJob {
    const now = new Date().toISOString();
    this.store
      .statement(
        `INSERT INTO opcua_push_jobs (device_id, application_uri, approved_by, approved_thumbprint, status, step, attempts, next_attempt_at, reason, updated_at)
         VALUES (?, ?, ?, ?, 'waiting', 'approved', 0, ?, ?, ?)
         ON CONFLICT (device_id) DO UPDATE SET application_uri = excluded.application_uri, approved_by = excluded.approved_by,
           approved_thumbprint = coalesce(excluded.approved_thumbprint, approved_thumbprint), status = 'waiting', step = 'approved',
           attempts = 0, next_attempt_at = excluded.next_attempt_at, reason = excluded.reason, updated_at = excluded.updated_at`,
      )
      .run(deviceId, applicationUri, approvedBy, thumbprint ?? null, now, reason, now);
    this.log(deviceId, 0, 'approved', 'ok', `${reason} (${approvedBy})`);
    return this.get(deviceId)!;
  }

  /** An attempt begins: counted, and marked running so that a crash leaves a trace. */
  begin(deviceId: string): PushJob {
    this.store
      .statement(`UPDATE opcua_push_jobs SET status = 'running', attempts = attempts + 1, updated_at = ? WHERE device_id = ?`)
      .run(new Date().toISOString(), deviceId);
    return this.get(deviceId)!;
  }

  /** Logs a step; `begun` also moves the job's step. */
  log(deviceId: string, attempt: number, step: PushStep, outcome: PushStepRecord['outcome'], detail?: string): void {
    const now = new Date().toISOString();
    this.store
      .statement('INSERT INTO opcua_push_steps (device_id, attempt, step, outcome, detail, at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(deviceId, attempt, step, outcome, detail ?? null, now);
    if (outcome === 'begun') this.store.statement('UPDATE opcua_push_jobs SET step = ?, updated_at = ? WHERE device_id = ?').run(step, now, deviceId);
  }

  /** The certificate issued by this push, recorded before it leaves the process. */
  issued(deviceId: string, serial: string): void {
    this.store.statement('UPDATE opcua_push_jobs SET serial = ?, updated_at = ? WHERE device_id = ?').run(serial, new Date().toISOString(), deviceId);
  }

  /**
   * Ends an attempt with its outcome; `nextAttemptAt` for a retry or a
   * renewal; `applied`: the serial verified on the server; `crlDelivered`
   * with `crlRevocations`, the digest of the CRLs it holds (see
   * onboarding/opcuaCrl.ts).
   */
  finish(
    deviceId: string,
    status: Exclude<PushStatus, 'running'>,
    reason: string,
    o: { nextAttemptAt?: Date; applied?: string; crlDelivered?: boolean; crlRevocations?: string } = {},
  ): void {
    const delivered = o.crlDelivered === undefined ? null : o.crlDelivered ? 1 : 0;
    this.store
      .statement(
        `UPDATE opcua_push_jobs SET status = ?, reason = ?, next_attempt_at = ?, applied_serial = coalesce(?, applied_serial),
           serial = coalesce(?, serial), crl_delivered = coalesce(?, crl_delivered),
           crl_revocations = CASE WHEN ? IS NULL THEN crl_revocations ELSE ? END, updated_at = ? WHERE device_id = ?`,
      )
      .run(
        status,
        reason,
        o.nextAttemptAt?.toISOString() ?? null,
        o.applied ?? null,
        o.applied ?? null,
        delivered,
        delivered,
        o.crlRevocations ?? null,
        new Date().toISOString(),
        deviceId,
      );
    this.store
      .statement(
        'DELETE FROM opcua_push_steps WHERE device_id = ? AND id <= (SELECT id FROM opcua_push_steps WHERE device_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)',
      )
      .run(deviceId, deviceId, STEPS_KEPT);
  }

  /** What a push found of the server's TrustList: whether it takes writes (CRLs over OPC UA). */
  crlWritable(deviceId: string, writable: boolean): void {
    this.store.statement('UPDATE opcua_push_jobs SET crl_writable = ? WHERE device_id = ?').run(writable ? 1 : 0, deviceId);
  }

  /** Servers (not stopped) last found holding the gateway's CRLs, with their digest (undefined: not known). */
  crlHolders(): { deviceId: string; status: PushStatus; writable?: boolean; revocations?: string }[] {
    const rows = this.store
      .statement(
        `SELECT device_id, status, crl_writable, crl_revocations FROM opcua_push_jobs WHERE status != 'stopped' AND crl_delivered = 1 ORDER BY device_id`,
      )
      .all() as { device_id: string; status: PushStatus; crl_writable: number | null; crl_revocations: string | null }[];
    return rows.map((r) => ({
      deviceId: r.device_id,
      status: r.status,
      ...(r.crl_writable !== null ? { writable: r.crl_writable === 1 } : {}),
      ...(r.crl_revocations ? { revocations: r.crl_revocations } : {}),
    }));
  }

  /**
   * The server's CRLs lack a revocation: it no longer holds current ones.
   * `push`: the job comes due now (waiting, as after an approval: the
   * attempt completes its TrustList without renewing its certificate);
   * `cannot`: it stays done, with `reason` saying what to do; `pending`: a
   * job not done keeps its status and reason (its next attempt sends the
   * current CRLs).
   */
  crlOutOfDate(deviceId: string, how: 'push' | 'cannot' | 'pending', reason: string): void {
    const now = new Date().toISOString();
    if (how === 'push') {
      this.store
        .statement(
          "UPDATE opcua_push_jobs SET status = 'waiting', step = 'crl', attempts = 0, next_attempt_at = ?, crl_delivered = 0, " +
            'reason = ?, updated_at = ? WHERE device_id = ?',
        )
        .run(now, reason, now, deviceId);
    } else if (how === 'cannot') {
      this.store.statement('UPDATE opcua_push_jobs SET crl_delivered = 0, reason = ?, updated_at = ? WHERE device_id = ?').run(reason, now, deviceId);
    } else {
      this.store.statement('UPDATE opcua_push_jobs SET crl_delivered = 0, updated_at = ? WHERE device_id = ?').run(now, deviceId);
    }
    this.log(deviceId, 0, 'crl', how === 'cannot' ? 'failed' : 'ok', reason);
  }

  steps(deviceId: string, limit = 50): PushStepRecord[] {
    const rows = this.store
      .statement('SELECT id, attempt, step, outcome, detail, at FROM opcua_push_steps WHERE device_id = ? ORDER BY id DESC LIMIT ?')
      .all(deviceId, limit) as { id: number; attempt: number; step: string; outcome: PushStepRecord['outcome']; detail: string | null; at: string }[];
    return rows
      .reverse()
      .map((r) => ({ id: r.id, attempt: r.attempt, step: r.step, outcome: r.outcome, ...(r.detail ? { detail: r.detail } : {}), at: new Date(r.at) }));
  }
}
