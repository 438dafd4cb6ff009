import { REVOCATION_REASON_CODES, type RevocationReason } from '../../certs/store.js';
import type { Store } from './database.js';
import { InternalError } from '../errors.js';

export type DeviceActionKind = 'approve' | 'reject' | 'revoke' | 'decommission';

export interface DeviceAction {
  id: number;
  deviceId: string;
  action: DeviceActionKind;
  /** approve: the request to approve; absent means the one waiting (refused when several with different keys wait). */
  requestId?: string;
  actor: string;
  /** Free text: why (approve, reject), or the note beside the CRL reason (revoke, decommission). */
  reason: string;
  /** revoke and decommission: what their CRL entries say (their kind's default when none was given). */
  crlReason?: RevocationReason;
  requestedAt: Date;
  doneAt?: Date;
  outcome?: string;
  error?: string;
}

/** The CRL reasons a revoke or decommission may give (RFC 5280 CRLReason names, as docs/ca.md lists them). */
export const REVOCATION_REASONS = Object.keys(REVOCATION_REASON_CODES) as [RevocationReason, ...RevocationReason[]];

export const isRevocationReason = (text: string): text is RevocationReason => Object.hasOwn(REVOCATION_REASON_CODES, text);

/** The text beside a revocation in the device history: "keyCompromise: stolen from line 3". */
export function revocationText(reason: RevocationReason, note?: string): string {
  return note ? `${reason}: ${note}` : reason;
}

/** Whether a decision of this kind withdraws certificates (and so carries a CRL reason). */
export const retiresDevice = (kind: DeviceActionKind): kind is 'revoke' | 'decommission' => kind === 'revoke' || kind === 'decommission';

/** The CRL reason a revoke or decommission action carries. */
export const crlReasonOf = (action: Pick<DeviceAction, 'action' | 'crlReason'>): RevocationReason => action.crlReason ?? defaultRevocationReason(action.action);

/**
 * What the device history says of a decision after its actor: the free
 * text; for a revoke or decommission the CRL reason before the note, unless
 * it is the kind's default and there is no note ("revoked by anna").
 */
export function decisionText(action: Pick<DeviceAction, 'action' | 'reason' | 'crlReason'>): string {
  if (!retiresDevice(action.action)) return action.reason;
  const reason = crlReasonOf(action);
  return action.reason || reason !== defaultRevocationReason(action.action) ? revocationText(reason, action.reason) : '';
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
  crl_reason: RevocationReason | null;
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
  ...(r.crl_reason ? { crlReason: r.crl_reason } : {}),
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

  /**
   * Queues a decision. `reason` is its free text (for a revoke or
   * decommission, the note); `crlReason` only for a revoke or decommission,
   * which get their kind's default without one.
   */
  enqueue(
    deviceId: string,
    action: DeviceActionKind,
    actor: string,
    details: { reason?: string; requestId?: string; crlReason?: RevocationReason } = {},
  ): DeviceAction {
    if (details.crlReason !== undefined && !retiresDevice(action)) throw new InternalError(`a ${action} carries no CRL reason`);
    const crlReason = retiresDevice(action) ? (details.crlReason ?? defaultRevocationReason(action)) : null;
    const info = this.store
      .statement('INSERT INTO device_actions (device_id, action, request_id, actor, reason, crl_reason, requested_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(deviceId, action, details.requestId ?? null, actor, details.reason ?? '', crlReason, new Date().toISOString());
    return this.get(Number(info.lastInsertRowid))!;
  }

  get(id: number): DeviceAction | undefined {
    const row = this.store.statement('SELECT * FROM device_actions WHERE id = ?').get(id) as Row | undefined;
    return row ? toAction(row) : undefined;
  }

  /** Actions not yet carried out for devices of one protocol (their ids start with `<protocol>:`), oldest first. */
  open(protocol: 'mqtt' | 'opcua', limit = 100): DeviceAction[] {
    return (
      this.store.statement("SELECT * FROM device_actions WHERE done_at IS NULL AND device_id LIKE ? || ':%' ORDER BY id LIMIT ?").all(protocol, limit) as Row[]
    ).map(toAction);
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
