/** Keys of sync_state: what the daemon records of the sync, and requests left for it (by the API or the CLI). */
export const SYNC_STATE = {
  lastSuccess: 'lastSuccess',
  lastError: 'lastError',
  nextAttemptAt: 'nextAttemptAt',
  connected: 'connected',
  paused: 'paused',
  pausedTokenMtime: 'paused.tokenMtime',
  requestNow: 'request.now',
  requestReconcile: 'request.reconcile',
  lastReconcile: 'lastReconcile',
  lastDivergence: 'lastDivergence',
  /** The events' last failure (a message), cleared by their next answered request. */
  eventsLastError: 'events.lastError',
  /** Set while the receiver answers 404 to the events route (a receiver of an older contract). */
  eventsUnknownRoute: 'events.unknownRoute',
} as const;

/** What the last reconciliation did: when, and how many devices it queued. */
export interface LastReconcile {
  at: string;
  queued: number;
}

/**
 * The last reconciliation that found devices diverged at the receiver (not
 * waiting to be sent, yet not held at their revision): missing there, held
 * at an older revision (behind), or at a newer one than this database (ahead).
 */
export interface LastDivergence {
  at: string;
  missing: number;
  behind: number;
  ahead: number;
  examples: string[];
}
