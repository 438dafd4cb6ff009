import { REVOCATION_REASON_CODES, type RevocationReason } from '../../certs/store.js';
import type { Store } from './database.js';

export type DeviceActionKind = 'approve' | 'reject' | 'revoke' | 'decommission';

export interface DeviceAction {
  id: number;
  deviceId: string;
  action: DeviceActionKind;
  /** approve: the request to approve; absent means the one waiting (refused when several with different keys wait). */
  requestId?: string;
  actor: string;
  reason: string;
  requestedAt: Date;
  doneAt?: Date;
  outcome?: string;
  error?: string;
}

/** The CRL reasons a revoke or decommission may give (RFC 5280 CRLReason names, as docs/ca.md lists them). */
export const REVOCATION_REASONS = Object.keys(REVOCATION_REASON_CODES) as [RevocationReason, ...RevocationReason[]];

export const isRevocationReason = (text: string): text is RevocationReason => Object.hasOwn(REVOCATION_REASON_CODES, text);

/**
 * The `reason` text of a revoke or decommission: the CRL reason, then the
 * note after ": " ("keyCompromise: stolen from line 3"), as the device
 * history shows it.
 */
export function revocationText(reason: RevocationReason, note?: string): string {
  return note ? `${reason}: ${note}` : reason;
}

/**
 * The CRL reason a revoke or decommission action carries, else the default
 * for its kind (unspecified, cessationOfOperation), also for actions queued
 * before reasons were checked, whose text is free.
 */
export function revocationReasonOf(action: Pick<DeviceAction, 'action' | 'reason'>): RevocationReason {
  const head = action.reason.split(': ', 1)[0]!;
  return isRevocationReason(head) ? head : defaultRevocationReason(action.action);
}

/** The CRL reason of a revoke (unspecified) or decommission (cessationOfOperation) that gives none. */
export const defaultRevocationReason = (kind: DeviceActionKind): RevocationReason => (kind === 'decommission' ? 'cessationOfOperation' : 'unspecified');

interface Row {
  id: number;
  device_id: string;
  action: DeviceActionKind;
  request_id: string | null;
  actor: string;
  reason: string;
  requested_at: string;
  done_at: string | null;
  outcome: string | null;
  error: string | null;
}

const toAction = (r: Row): DeviceAction => ({
  id: r.id,
  deviceId: r.device_id,
  action: r.action,
  ...(r.request_id ? { requestId: r.request_id } : {}),
  actor: r.actor,
  reason: r.reason,
  requestedAt: new Date(r.requested_at),
  ...(r.done_at ? { doneAt: new Date(r.done_at) } : {}),
  ...(r.outcome ? { outcome: r.outcome } : {}),
  ...(r.error ? { error: r.error } : {}),
});

/**
 * Technicians' decisions, queued in the database by the CLI (or the API) and
 * carried out by the daemon, which alone holds the CA key and the broker
 * connection. Each is done once: `finish()` records the outcome.
 */
export class ActionRepository {
  constructor(private readonly store: Store) {}

  enqueue(deviceId: string, action: DeviceActionKind, actor: string, reason: string, requestId?: string): DeviceAction {
    const info = this.store
      .statement('INSERT INTO device_actions (device_id, action, request_id, actor, reason, requested_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(deviceId, action, requestId ?? null, actor, reason, new Date().toISOString());
    return this.get(Number(info.lastInsertRowid))!;
  }

  get(id: number): DeviceAction | undefined {
    const row = this.store.statement('SELECT * FROM device_actions WHERE id = ?').get(id) as Row | undefined;
    return row ? toAction(row) : undefined;
  }

  /** Actions not yet carried out for devices of one protocol (their ids start with `<protocol>:`), oldest first. */
  open(protocol: 'mqtt' | 'opcua', limit = 100): DeviceAction[] {
    return (this.store.statement("SELECT * FROM device_actions WHERE done_at IS NULL AND device_id LIKE ? || ':%' ORDER BY id LIMIT ?").all(protocol, limit) as Row[]).map(toAction);
  }

  /** Whether a decision for this device waits to be carried out. */
  hasOpen(deviceId: string): boolean {
    return this.store.statement('SELECT 1 FROM device_actions WHERE done_at IS NULL AND device_id = ? LIMIT 1').get(deviceId) !== undefined;
  }

  finish(id: number, outcome: string, error?: string): void {
    this.store
      .statement('UPDATE device_actions SET done_at = ?, outcome = ?, error = ? WHERE id = ? AND done_at IS NULL')
      .run(new Date().toISOString(), outcome, error ?? null, id);
  }
}
