import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../log.js';
import type { SyncRepository } from '../store/syncRepository.js';
import type { Reconciliation } from './sender.js';
import { SYNC_STATE } from './syncState.js';

const DIVERGENCE_KINDS = ['missing', 'behind', 'ahead'] as const;

/**
 * What the sync shows of itself in /metrics, and its alarms: the backlog
 * gauges, and the stuck alarm (a batch unanswered longer than
 * sync.stuckAfterMs), logged once when it rises and once when it clears.
 */
export class SyncMetrics {
  readonly outbox: Gauge;
  readonly dead: Gauge;
  readonly paused: Gauge;
  readonly stuck: Gauge;
  readonly divergent: Counter<'kind'>;
  readonly sent: Counter<'status'>;
  readonly batches: Counter<'result'>;
  readonly latency: Histogram;
  readonly lastSuccess: Gauge;
  readonly eventsWaiting: Gauge;
  readonly eventsRefused: Gauge;
  readonly events: Counter<'status'>;
  private countedAt = 0;
  private stuckSince: Date | undefined;

  constructor(registry: Registry) {
    const registers = [registry];
    this.outbox = new Gauge({ name: 'edge_agent_sync_outbox', help: 'Devices whose latest revision the receiver has not acknowledged', registers });
    this.dead = new Gauge({ name: 'edge_agent_sync_dead_letters', help: 'Items the receiver refused, waiting for a technician', registers });
    this.paused = new Gauge({ name: 'edge_agent_sync_paused', help: '1 while sync is paused (the receiver refuses the credentials)', registers });
    this.stuck = new Gauge({
      name: 'edge_agent_sync_stuck_batches',
      help: 'Batches the receiver has not accepted for longer than sync.stuckAfterMs',
      registers,
    });
    this.divergent = new Counter({
      name: 'edge_agent_sync_divergent_devices_total',
      help: 'Devices reconciliations found diverged at the receiver, by kind: missing, behind, ahead',
      labelNames: ['kind'],
      registers,
    });
    for (const kind of DIVERGENCE_KINDS) this.divergent.inc({ kind }, 0);
    this.sent = new Counter({ name: 'edge_agent_sync_items_total', help: 'Items answered by the receiver, by status', labelNames: ['status'], registers });
    this.batches = new Counter({ name: 'edge_agent_sync_batches_total', help: 'Batch requests, by result', labelNames: ['result'], registers });
    this.latency = new Histogram({
      name: 'edge_agent_sync_batch_seconds',
      help: 'Time from sending a batch to its answer',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.lastSuccess = new Gauge({
      name: 'edge_agent_sync_last_success_timestamp_seconds',
      help: 'When the receiver last acknowledged a batch (Unix time)',
      registers,
    });
    this.eventsWaiting = new Gauge({ name: 'edge_agent_sync_events_waiting', help: 'Events (report findings) waiting to be sent upstream', registers });
    this.eventsRefused = new Gauge({
      name: 'edge_agent_sync_events_refused',
      help: 'Events the receiver refused, kept until a technician retries them',
      registers,
    });
    this.events = new Counter({
      name: 'edge_agent_sync_events_total',
      help: 'Events answered by the receiver, by status: stored, duplicate, rejected, refused (an HTTP status to the event alone)',
      labelNames: ['status'],
      registers,
    });
  }

  /** The backlog gauges, counted at most once a second (a count over a long outbox is not free), and the stuck alarm. */
  refresh(repo: SyncRepository, stuckAfterMs: number, log: Logger): void {
    if (Date.now() - this.countedAt < 1_000) return;
    this.countedAt = Date.now();
    this.outbox.set(repo.outboxSize());
    this.dead.set(repo.deadLetterCount());
    const events = repo.events.counts();
    this.eventsWaiting.set(events.waiting);
    this.eventsRefused.set(events.refused);
    const stuck = repo.batchesOlderThan(new Date(Date.now() - stuckAfterMs));
    this.stuck.set(stuck.count);
    if (stuck.count > 0 && !this.stuckSince) {
      this.stuckSince = stuck.since;
      log.error(
        { batches: stuck.count, since: stuck.since?.toISOString(), lastError: repo.getState<string>(SYNC_STATE.lastError) },
        'sync stuck: the receiver has not accepted a batch for longer than sync.stuckAfterMs',
      );
    } else if (stuck.count === 0 && this.stuckSince) {
      log.info({ since: this.stuckSince.toISOString() }, 'sync no longer stuck');
      this.stuckSince = undefined;
    }
  }

  /** What a reconciliation found, counted. */
  reconciled(found: Reconciliation): void {
    for (const kind of DIVERGENCE_KINDS) this.divergent.inc({ kind }, found[kind]);
  }
}
