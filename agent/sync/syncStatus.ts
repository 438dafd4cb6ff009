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
  /** The events (report findings) sent beside the devices: waiting, refused by the receiver, and why they wait if they do. */
  events: SyncEventsStatus;
}

export interface SyncEventsStatus {
  waiting: number;
  refused: number;
  /** The receiver answers 404 to the events route (an older contract): the events wait. */
  unknownRoute?: string;
  lastError?: string;
  /** The event the receiver refused last: its id, type, status (200: a `rejected` result) and reason. */
  lastRefused?: { eventId: string; type: string; status: number; error: string; at: string };
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
    events: repo.events.counts(),
  };
  const unknownRoute = repo.getState<string>(SYNC_STATE.eventsUnknownRoute);
  if (unknownRoute !== undefined) out.events.unknownRoute = unknownRoute;
  const eventsError = repo.getState<string>(SYNC_STATE.eventsLastError);
  if (eventsError !== undefined) out.events.lastError = eventsError;
  const refused = out.events.refused > 0 ? repo.events.refused(1)[0] : undefined;
  if (refused) out.events.lastRefused = { ...refused, at: refused.at.toISOString() };
  const stuck = repo.batchesOlderThan(new Date(Date.now() - config.sync.stuckAfterMs));
  if (stuck.count > 0 && stuck.since) out.stuck = { batches: stuck.count, since: stuck.since.toISOString() };
  for (const key of ['paused', 'lastSuccess', 'lastError', 'nextAttemptAt', 'lastReconcile', 'lastDivergence'] as const) {
    const v = repo.getState<never>(SYNC_STATE[key]);
    if (v !== undefined) (out as unknown as Record<string, unknown>)[key] = v;
  }
  return out;
}
