import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { SyncRepository } from '../store/syncRepository.js';
import type { SyncSender } from './sender.js';
import type { SyncMetrics } from './syncMetrics.js';
import { SYNC_STATE, type LastDivergence, type LastReconcile } from './syncState.js';

export interface ReconcileScheduleDeps {
  log: Logger;
  repo: SyncRepository;
  sender: Pick<SyncSender, 'reconcile'>;
  metrics: SyncMetrics;
  config: () => Config['sync'];
}

/**
 * When the sync compares with what the receiver holds, and what it says of
 * it: at start (sync.reconcileOnStart), on a technician's request, every
 * sync.reconcileIntervalMs, and after an item is answered stale at its
 * batch's first send. One that fails is tried again after sync.retryMaxMs.
 * Divergence found (devices the receiver lacks or holds at another revision
 * while nothing waits to be sent for them) is logged, counted, and kept in
 * sync_state for `sync status`.
 */
export class ReconcileSchedule {
  private readonly startedAt = Date.now();
  private retryAt = 0;
  private staleAt = 0;

  constructor(private readonly deps: ReconcileScheduleDeps) {}

  /** Asks for one at the next look: a request in sync_state, as the CLI leaves it. */
  request(): void {
    this.deps.repo.setState(SYNC_STATE.requestReconcile, new Date().toISOString());
  }

  /** Items answered stale at their batch's first send: the receiver holds newer revisions than the agent sent (at most once per sync.retryMaxMs). */
  staleAtFirstSend(batch: string, stale: number, sentAt: number): void {
    if (sentAt < this.staleAt) return;
    this.staleAt = sentAt + this.deps.config().retryMaxMs;
    this.request();
    this.deps.log.warn({ batch, stale }, 'the receiver answered stale to a first send: it holds newer revisions; reconciling');
  }

  /** Runs one if one is asked for or due. */
  async runIfDue(): Promise<void> {
    const { repo, log, metrics } = this.deps;
    const s = this.deps.config();
    const asked = repo.getState<string>(SYNC_STATE.requestReconcile);
    const last = repo.getState<LastReconcile>(SYNC_STATE.lastReconcile);
    const due = s.reconcileIntervalMs > 0 && Date.now() - Math.max(last ? Date.parse(last.at) : 0, this.startedAt) >= s.reconcileIntervalMs;
    if ((!asked && !due) || Date.now() < this.retryAt) return;
    try {
      const found = await this.deps.sender.reconcile();
      if (asked) repo.clearState(SYNC_STATE.requestReconcile, asked);
      const at = new Date().toISOString();
      repo.setState(SYNC_STATE.lastReconcile, { at, queued: found.queued } satisfies LastReconcile);
      metrics.reconciled(found);
      if (found.missing + found.behind + found.ahead > 0) {
        const divergence: LastDivergence = { at, missing: found.missing, behind: found.behind, ahead: found.ahead, examples: found.examples };
        repo.setState(SYNC_STATE.lastDivergence, divergence);
        log.warn({ ...divergence, queued: found.queued }, 'the receiver diverged from the agent: those devices are sent again');
      } else log.info({ queued: found.queued }, 'reconciled with the receiver');
    } catch (err) {
      // Still wanted, tried again later; batches go on meanwhile (a receiver whose listing is broken still takes them).
      const message = (err as Error).message;
      this.retryAt = Date.now() + s.retryMaxMs;
      repo.setState(SYNC_STATE.lastError, `reconciliation: ${message}`);
      log.warn({ error: message }, 'reconciliation with the receiver failed; trying again later');
    }
  }
}
