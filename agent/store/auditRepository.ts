import type { Store } from './database.js';

export type AuditOutcome = 'done' | 'accepted' | 'refused';

export interface AuditEntry {
  id: number;
  at: Date;
  actor: string;
  role: string;
  action: string;
  target: string;
  outcome: AuditOutcome;
  details?: Record<string, unknown>;
}

interface AuditRow {
  id: number;
  at: string;
  actor: string;
  role: string;
  action: string;
  target: string;
  outcome: AuditOutcome;
  details: string | null;
}

const toEntry = (r: AuditRow): AuditEntry => ({
  id: r.id,
  at: new Date(r.at),
  actor: r.actor,
  role: r.role,
  action: r.action,
  target: r.target,
  outcome: r.outcome,
  ...(r.details ? { details: JSON.parse(r.details) as Record<string, unknown> } : {}),
});

/**
 * Who changed what through the local API (and the CLI working on the
 * database directly). Written in the same transaction as the change it
 * explains; never holds a secret.
 */
export class AuditRepository {
  constructor(private readonly store: Store) {}

  add(e: Omit<AuditEntry, 'id' | 'at'>): AuditEntry {
    const at = new Date();
    const info = this.store
      .statement('INSERT INTO audit_log (at, actor, role, action, target, outcome, details) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(at.toISOString(), e.actor, e.role, e.action, e.target, e.outcome, e.details ? JSON.stringify(e.details) : null);
    return { id: Number(info.lastInsertRowid), at, ...e };
  }

  /** Newest first; `actor` narrows to one user. */
  list(filter: { actor?: string; limit: number; offset: number }): { total: number; items: AuditEntry[] } {
    const actor = filter.actor ?? null;
    const total = (this.store.statement('SELECT count(*) AS n FROM audit_log WHERE (@actor IS NULL OR actor = @actor)').get({ actor }) as { n: number }).n;
    const rows = this.store
      .statement('SELECT * FROM audit_log WHERE (@actor IS NULL OR actor = @actor) ORDER BY id DESC LIMIT @limit OFFSET @offset')
      .all({ actor, limit: filter.limit, offset: filter.offset }) as AuditRow[];
    return { total, items: rows.map(toEntry) };
  }
}
