import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { SyncRepository } from '../store/syncRepository.js';
import type { UpstreamAdapter } from './adapter.js';
import type { EventSender } from './eventSender.js';
import type { SyncMetrics } from './syncMetrics.js';
import type { SyncPause } from './syncPause.js';
import { SYNC_STATE } from './syncState.js';
import { Wakeups } from './wakeups.js';

export interface EventWorkerDeps {
  log: Logger;
  repo: SyncRepository;
  sender: EventSender;
  client: UpstreamAdapter;
  pauses: SyncPause;
  metrics: SyncMetrics;
  config: () => Config['sync'];
  /** The receiver's request to wait (Retry-After), shared with the device workers: until when, and to ask for one. */
  holdUntil: () => number;
  hold: (until: number) => void;
}

/**
 * Sends the events (report findings) upstream, one request at a time and
 * so in the order they were queued, beside the device workers and apart
 * from them: a receiver that refuses or does not know the events route
 * never holds the devices up. Failures back off as the device batches do
 * (full jitter, Retry-After shared with them, pause on a refused token);
 * a 404 (a receiver of an older contract) leaves the events waiting, says
 * so once, and asks again every sync.retryMaxMs or on `sync now`.
 */
export class EventWorker {
  private readonly waits = new Wakeups();
  private running: Promise<void> | undefined;
  private stopping = false;
  private failures = 0;
  /** Not sent before this (a backoff, or a receiver without the route). */
  private retryAt = 0;
  /** Events per request while the receiver refuses a request (400, 413, 422): halved until the one at fault is alone. */
  private limit: number | undefined;
  private unknownRoute: boolean;

  constructor(private readonly deps: EventWorkerDeps) {
    this.unknownRoute = deps.repo.getState<string>(SYNC_STATE.eventsUnknownRoute) !== undefined;
  }

  start(): void {
    this.running = this.loop();
  }

  /** Events were queued: look now (or at the end of the request in flight). */
  nudge(): void {
    this.waits.nudge();
  }

  /** `sync now`, SIGHUP: every wait ends, the route is asked for again. */
  hurry(): void {
    this.retryAt = 0;
    this.waits.wake();
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      let delay: number;
      try {
        delay = await this.cycle();
      } catch (err) {
        this.failures += 1;
        const message = (err as Error).message;
        this.deps.repo.setState(SYNC_STATE.eventsLastError, message);
        this.deps.log.error({ error: message, failures: this.failures }, 'sync: sending events failed');
        delay = this.backoff();
      }
      if (delay > 0 && !this.stopping) await this.waits.sleep(delay);
    }
  }

  private async cycle(): Promise<number> {
    const { repo, sender, metrics } = this.deps;
    const config = this.deps.config();
    const now = Date.now();
    // Paused on a refused token: the device workers lift it (SyncPause.check); this one looks again.
    if (repo.getState<string>(SYNC_STATE.paused)) return config.idleMs;
    const until = Math.max(this.retryAt, this.deps.holdUntil());
    if (now < until) return until - now;
    const batch = sender.next(this.limit ?? config.batchSize, config.batchMaxBytes);
    if (!batch) return config.idleMs;
    const outcome = await sender.send(batch);
    switch (outcome.kind) {
      case 'answered': {
        for (const [status, n] of Object.entries(outcome.counts)) if (n > 0) metrics.events.inc({ status }, n);
        if (outcome.counts.rejected + outcome.counts.refused > 0)
          this.deps.log.warn(
            { rejected: outcome.counts.rejected, refused: outcome.counts.refused },
            'the receiver refused events: they are kept as refused (edge-agent sync status)',
          );
        if (this.unknownRoute) {
          this.unknownRoute = false;
          repo.setState(SYNC_STATE.eventsUnknownRoute, undefined);
          this.deps.log.info('the receiver takes events now: sending the ones that waited');
        }
        repo.setState(SYNC_STATE.eventsLastError, undefined);
        this.limit = undefined;
        if (outcome.missing > 0) return this.failed(`the receiver answered ${batch.events.length - outcome.missing} of ${batch.events.length} events`);
        this.failures = 0;
        return 0;
      }
      case 'narrow':
        this.limit = Math.max(1, Math.ceil(batch.events.length / 2));
        this.deps.log.warn({ events: batch.events.length, error: outcome.message }, 'the receiver refused a request of events: sending fewer at a time');
        return 0;
      case 'unknown-route': {
        if (!this.unknownRoute) {
          this.unknownRoute = true;
          repo.setState(SYNC_STATE.eventsUnknownRoute, outcome.message);
          this.deps.log.warn(
            { waiting: repo.events.counts().waiting, retryMs: config.retryMaxMs },
            'the receiver does not know the events route (404): the events wait, the devices are still sent; asked again every sync.retryMaxMs',
          );
        }
        this.retryAt = Date.now() + config.retryMaxMs;
        return config.retryMaxMs;
      }
      case 'unauthorized': {
        const client = this.deps.client;
        if (outcome.tokenVersion !== undefined && outcome.tokenVersion !== client.tokenVersion) return 0;
        if (client.rereadToken()) return 0;
        this.deps.pauses.pause(outcome.message);
        return config.idleMs;
      }
      case 'throttled': {
        this.failures += 1;
        repo.setState(SYNC_STATE.eventsLastError, outcome.message);
        const wait = Math.max(outcome.retryAfterMs ?? this.backoff(), config.retryInitialMs);
        this.deps.hold(Date.now() + wait);
        this.retryAt = Date.now() + wait;
        return wait;
      }
      default:
        return this.failed(outcome.message);
    }
  }

  /** The same events go again after a backoff. */
  private failed(message: string): number {
    this.failures += 1;
    this.deps.repo.setState(SYNC_STATE.eventsLastError, message);
    const wait = this.backoff();
    this.retryAt = Date.now() + wait;
    this.deps.log.warn(
      { error: message, failures: this.failures, retryAt: new Date(this.retryAt).toISOString() },
      'sync: events not delivered; sending them again after a backoff',
    );
    return wait;
  }

  /** Full jitter, as for the device batches: 0 to min(retryMaxMs, retryInitialMs * 2^failures). */
  private backoff(): number {
    const s = this.deps.config();
    return Math.floor(Math.random() * Math.min(s.retryMaxMs, s.retryInitialMs * 2 ** Math.min(this.failures, 30)));
  }

  /** Wakes the loop for a reloaded configuration. */
  reload(): void {
    this.waits.wake();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.waits.stop();
    await this.running;
  }
}
