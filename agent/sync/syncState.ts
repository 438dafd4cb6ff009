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
} as const;

/** What the last reconciliation did: when, how many devices it queued, and how many of them had diverged. */
export interface LastReconcile {
  at: string;
  queued: number;
  divergent?: { missing: number; behind: number; ahead: number };
}
