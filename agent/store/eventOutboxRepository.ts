import type { Store } from './database.js';

/** An event waiting in the upstream outbox (report_events), its body exactly as it is sent. */
export interface QueuedEvent {
  eventId: string;
  type: string;
  /** The event as sent (docs/upstream-api.md, "Events"): JSON text, never re-encoded. */
  body: string;
  queuedAt: Date;
  attempts: number;
}

/** An event the receiver refused (a `rejected` result, or an HTTP status with the event alone). */
export interface RefusedEvent {
  eventId: string;
  type: string;
  /** 200 for a `rejected` result, else the HTTP status the event alone was refused with. */
  status: number;
  error: string;
  at: Date;
}

/**
 * The outbox of the events sent upstream (report_events, migration 0014).
 * The report writes the rows, in the same transaction as the finding they
 * tell of (agent/store/reportRepository.ts); this repository is the sync's
 * side: the oldest first, deleted once the receiver has them (stored or
 * duplicate), kept and marked when it refuses one.
 */
export class EventOutboxRepository {
  constructor(private readonly store: Store) {}

  /** The oldest events not refused, in the order they were queued. */
  waiting(limit: number): QueuedEvent[] {
    const rows = this.store
      .statement('SELECT event_id, type, body, queued_at, attempts FROM report_events WHERE refused_at IS NULL ORDER BY id LIMIT ?')
      .all(limit) as { event_id: string; type: string; body: string; queued_at: string; attempts: number }[];
    return rows.map((r) => ({ eventId: r.event_id, type: r.type, body: r.body, queuedAt: new Date(r.queued_at), attempts: r.attempts }));
  }

  /** One more attempt at these events (shown as their attempts; a count lost to a crash costs nothing). */
  countAttempt(eventIds: readonly string[]): void {
    const bump = this.store.statement('UPDATE report_events SET attempts = attempts + 1 WHERE event_id = ?');
    for (const id of eventIds) bump.run(id);
  }

  /** The receiver holds it (stored, or a duplicate of one it stored): it leaves the outbox. */
  delivered(eventId: string): void {
    this.store.statement('DELETE FROM report_events WHERE event_id = ?').run(eventId);
  }

  /** The receiver refused it: kept, with the status and the receiver's reason, and no longer sent. */
  refuse(eventId: string, status: number, error: string): void {
    this.store
      .statement('UPDATE report_events SET refused_status = ?, refused_error = ?, refused_at = ? WHERE event_id = ?')
      .run(status, error.slice(0, 2_000), new Date().toISOString(), eventId);
  }

  /** How many wait to be sent, and how many the receiver refused. */
  counts(): { waiting: number; refused: number } {
    const r = this.store.statement('SELECT count(*) - count(refused_at) AS waiting, count(refused_at) AS refused FROM report_events').get() as {
      waiting: number;
      refused: number;
    };
    return { waiting: r.waiting, refused: r.refused };
  }

  /** The refused events, the latest first. */
  refused(limit = 1_000): RefusedEvent[] {
    const rows = this.store
      .statement(
        `SELECT event_id, type, refused_status, refused_error, refused_at FROM report_events
         WHERE refused_at IS NOT NULL ORDER BY refused_at DESC, id DESC LIMIT ?`,
      )
      .all(limit) as { event_id: string; type: string; refused_status: number; refused_error: string; refused_at: string }[];
    return rows.map((r) => ({ eventId: r.event_id, type: r.type, status: r.refused_status, error: r.refused_error, at: new Date(r.refused_at) }));
  }

  /** Every refused event back into the queue, in its original place (by id); returns how many. */
  retryRefused(): number {
    return this.store.statement('UPDATE report_events SET refused_status = NULL, refused_error = NULL, refused_at = NULL WHERE refused_at IS NOT NULL').run()
      .changes;
  }
}
