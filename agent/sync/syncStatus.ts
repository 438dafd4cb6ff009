import type { Config } from '../config/schema.js';
import type { SyncRepository } from '../store/syncRepository.js';
import { SYNC_STATE, type LastDivergence, type LastReconcile } from './syncState.js';

export interface SyncStatus {
  enabled: boolean;
  receiver: string;
  connected: boolean;
  paused?: string;
  lastSuccess?: string;
  lastError?: string;
  nextAttemptAt?: string;
  backlog: number;
  batchesWaiting: number;
  /** The stuck alarm: batches the receiver has not accepted for longer than sync.stuckAfterMs, and since when the oldest waits. */
  stuck?: { batches: number; since: string };
  deadLetters: number;
  lastReconcile?: LastReconcile;
  /** The last reconciliation that found devices diverged at the receiver. */
  lastDivergence?: LastDivergence;
}

/** What the sync is doing, as the daemon last wrote it (the CLI and the API both show this). */
export function readSyncStatus(repo: SyncRepository, config: Config): SyncStatus {
  const out: SyncStatus = {
    enabled: config.sync.enabled,
    receiver: config.sync.baseUrl,
    connected: repo.getState<boolean>(SYNC_STATE.connected) ?? false,
    backlog: repo.outboxSize(),
    batchesWaiting: repo.batchKeys().length,
    deadLetters: repo.deadLetterCount(),
  };
  const stuck = repo.batchesOlderThan(new Date(Date.now() - config.sync.stuckAfterMs));
  if (stuck.count > 0 && stuck.since) out.stuck = { batches: stuck.count, since: stuck.since.toISOString() };
  for (const key of ['paused', 'lastSuccess', 'lastError', 'nextAttemptAt', 'lastReconcile', 'lastDivergence'] as const) {
    const v = repo.getState<never>(SYNC_STATE[key]);
    if (v !== undefined) (out as unknown as Record<string, unknown>)[key] = v;
  }
  return out;
}
