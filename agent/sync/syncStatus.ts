import type { Config } from '../config/schema.js';
import type { SyncRepository } from '../store/syncRepository.js';
import { SYNC_STATE } from './syncService.js';

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
  deadLetters: number;
  lastReconcile?: { at: string; queued: number };
}

/** What the sync is doing, as the daemon last wrote it (the CLI and the API both show this). */
export function readSyncStatus(repo: SyncRepository, config: Config): SyncStatus {
  const out: SyncStatus = {
    enabled: config.sync.enabled,
    receiver: config.sync.baseUrl,
    connected: repo.getState<boolean>(SYNC_STATE.connected) ?? false,
    backlog: repo.outboxSize(),
    batchesWaiting: repo.batches().length,
    deadLetters: repo.deadLetterCount(),
  };
  for (const key of ['paused', 'lastSuccess', 'lastError', 'nextAttemptAt', 'lastReconcile'] as const) {
    const v = repo.getState<never>(SYNC_STATE[key]);
    if (v !== undefined) (out as unknown as Record<string, unknown>)[key] = v;
  }
  return out;
}
