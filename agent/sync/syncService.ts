import { statSync } from 'node:fs';
import { Counter, Gauge, Histogram } from 'prom-client';
import type { CaService } from '../ca/caService.js';
import { ensureAgentClient } from '../ca/localIdentity.js';
import type { Config } from '../config/schema.js';
import type { Service } from '../lifecycle/service.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { CertificateRepository } from '../store/certificateRepository.js';
import { DeviceRepository } from '../store/deviceRepository.js';
import type { StoreService } from '../store/storeService.js';
import { SyncRepository, type StoredBatch } from '../store/syncRepository.js';
import { upstreamItem, type Location } from './record.js';
import { SyncSender, type BatchOutcome } from './sender.js';
import { UpstreamClient } from './upstreamClient.js';

export interface SyncServiceDeps {
  log: Logger;
  config: Config;
  storage: StoreService;
  ca: CaService;
  metrics: Metrics;
}

/** Items refused alone in a row before the sync pauses instead of dead-lettering more. */
const REFUSED_STREAK = 20;
/** Batches in flight at once (one worker each). */
const IN_FLIGHT = 2;

/** Keys of sync_state. */
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

/**
 * Sends the inventory upstream (docs/upstream-api.md): builds batches from
 * the outbox, stores each before it is sent, sends one at a time and
 * retries it under the same Idempotency-Key until the receiver answers;
 * backs off with full jitter while the receiver is unreachable, honours
 * Retry-After, splits a batch the receiver refuses (400, 413, 422) until
 * the item that causes it is found and dead-lettered, and pauses on a 401
 * that a fresh read of the token does not cure. Reconciles with what the
 * receiver holds at start and on request.
 */
export class SyncService implements Service {
  readonly name = 'sync';
  private config: Config;
  private repo: SyncRepository | undefined;
  private sender: SyncSender | undefined;
  private client: UpstreamClient | undefined;
  private running: Promise<void> | undefined;
  private stopping = false;
  private readonly wakers = new Set<() => void>();
  private readonly sending = new Set<string>();
  private failures = 0;
  private tokenMtime = 0;
  private reconcileRetryAt = 0;
  private holdUntil = 0;
  private refusedStreak = 0;
  private readonly outbox: Gauge;
  private readonly dead: Gauge;
  private readonly paused: Gauge;
  private readonly sent: Counter<'status'>;
  private readonly batches: Counter<'result'>;
  private readonly latency: Histogram;
  private readonly lastSuccess: Gauge;

  constructor(private readonly deps: SyncServiceDeps) {
    this.config = deps.config;
    const registers = [deps.metrics.registry];
    this.outbox = new Gauge({ name: 'edge_agent_sync_outbox', help: 'Devices whose latest revision the receiver has not acknowledged', registers });
    this.dead = new Gauge({ name: 'edge_agent_sync_dead_letters', help: 'Items the receiver refused, waiting for a technician', registers });
    this.paused = new Gauge({ name: 'edge_agent_sync_paused', help: '1 while sync is paused (the receiver refuses the credentials)', registers });
    this.sent = new Counter({ name: 'edge_agent_sync_items_total', help: 'Items answered by the receiver, by status', labelNames: ['status'], registers });
    this.batches = new Counter({ name: 'edge_agent_sync_batches_total', help: 'Batch requests, by result', labelNames: ['result'], registers });
    this.latency = new Histogram({ name: 'edge_agent_sync_batch_seconds', help: 'Time from sending a batch to its answer', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers });
    this.lastSuccess = new Gauge({ name: 'edge_agent_sync_last_success_timestamp_seconds', help: 'When the receiver last acknowledged a batch (Unix time)', registers });
  }

  async start(): Promise<void> {
    const { store } = this.deps.storage;
    this.repo = new SyncRepository(store);
    this.refreshGauges();
    // A pause outlives a restart, and so does its alarm.
    this.paused.set(this.repo.getState<string>(SYNC_STATE.paused) ? 1 : 0);
    if (!this.config.sync.enabled) return;
    const s = this.config.sync;
    const identity = s.clientCertificate ? await ensureAgentClient(this.deps.ca, this.config, this.deps.log, 'mqtt') : undefined;
    this.client = new UpstreamClient({
      baseUrl: s.baseUrl,
      gatewayId: s.gatewayId || this.config.agent.id,
      caFile: s.caFile,
      ...(identity ? { clientCertificate: { cert: identity.cert, key: identity.key } } : {}),
      ...(s.tokenFile ? { tokenFile: s.tokenFile } : {}),
      timeoutMs: s.timeoutMs,
    });
    // Paused before a restart: compared with the file as it was when the pause began, so a token fixed meanwhile is seen.
    this.tokenMtime = this.repo.getState<number>(SYNC_STATE.pausedTokenMtime) ?? this.mtime();
    const certificates = new CertificateRepository(store);
    const devices = new DeviceRepository(store);
    this.sender = new SyncSender({
      log: this.deps.log,
      store,
      repo: this.repo,
      client: this.client,
      items: (limit) => {
        const location = this.location();
        return devices.awaitingSync(limit).map((device) => upstreamItem(device, device.certificateSerial ? certificates.get(device.certificateSerial) : undefined, location));
      },
      limits: () => ({ batchSize: this.config.sync.batchSize, batchMaxBytes: this.config.sync.batchMaxBytes }),
    });
    if (s.reconcileOnStart) this.repo.setState(SYNC_STATE.requestReconcile, new Date().toISOString());
    this.running = this.loop();
  }

  private location(): Location {
    return Object.fromEntries(Object.entries(this.config.sync.location).filter(([, v]) => v !== '')) as Location;
  }

  private mtime(): number {
    try {
      return this.config.sync.tokenFile ? statSync(this.config.sync.tokenFile).mtimeMs : 0;
    } catch {
      return 0;
    }
  }

  private gaugesAt = 0;

  /** The backlog gauges, counted at most once a second (a count over a long outbox is not free). */
  private refreshGauges(): void {
    if (!this.repo || Date.now() - this.gaugesAt < 1_000) return;
    this.gaugesAt = Date.now();
    this.outbox.set(this.repo.outboxSize());
    this.dead.set(this.repo.deadLetterCount());
  }

  /** Waits `ms`, or less when woken (stop, reload). */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakers.add(done);
    });
  }

  private wake(): void {
    for (const w of [...this.wakers]) w();
  }

  /** IN_FLIGHT workers: while one waits for the receiver, the next builds and sends its batch. */
  private async loop(): Promise<void> {
    await Promise.all(Array.from({ length: IN_FLIGHT }, (_, i) => this.worker(i)));
  }

  private async worker(index: number): Promise<void> {
    const repo = this.repo!;
    while (!this.stopping) {
      let delay: number;
      try {
        delay = await this.cycle(repo, index);
      } catch (err) {
        this.failures += 1;
        const message = (err as Error).message;
        repo.setState(SYNC_STATE.lastError, message);
        this.deps.log.error({ error: message, failures: this.failures }, 'sync cycle failed');
        delay = this.backoff();
      }
      this.refreshGauges();
      if (delay > 0 && !this.stopping) {
        repo.setState(SYNC_STATE.nextAttemptAt, delay > this.config.sync.idleMs ? new Date(Date.now() + delay).toISOString() : undefined);
        await this.sleep(delay);
      }
    }
  }

  /** One step of a worker; returns how long to wait before the next. Requests, pauses and reconciliation are the first worker's. */
  private async cycle(repo: SyncRepository, worker: number): Promise<number> {
    const s = this.config.sync;
    // A receiver that asked for a pause (Retry-After) gets it from every worker.
    if (Date.now() < this.holdUntil) return this.holdUntil - Date.now();
    if (worker > 0) return repo.getState<string>(SYNC_STATE.paused) ? s.idleMs : this.sendNext(repo, false);
    const now = repo.getState<string>(SYNC_STATE.requestNow);
    // Cleared only if unchanged: a request the CLI makes meanwhile is not lost.
    if (now) repo.clearState(SYNC_STATE.requestNow, now);
    const paused = repo.getState<string>(SYNC_STATE.paused);
    if (paused) {
      // Paused on a 401: until a technician asks (sync now), or the token file changes.
      const mtime = this.mtime();
      if (!now && mtime === this.tokenMtime) return s.idleMs;
      this.tokenMtime = mtime;
      this.client!.rereadToken();
      this.refusedStreak = 0;
      repo.setState(SYNC_STATE.paused, undefined);
      repo.setState(SYNC_STATE.pausedTokenMtime, undefined);
      this.paused.set(0);
      this.deps.log.info('sync resumed');
    }
    const reconcile = repo.getState<string>(SYNC_STATE.requestReconcile);
    if (reconcile && Date.now() >= this.reconcileRetryAt) {
      try {
        const queued = await this.sender!.reconcile();
        repo.clearState(SYNC_STATE.requestReconcile, reconcile);
        repo.setState(SYNC_STATE.lastReconcile, { at: new Date().toISOString(), queued });
        this.deps.log.info({ queued }, 'reconciled with the receiver');
      } catch (err) {
        // Still wanted, tried again later; batches go on meanwhile (a receiver whose listing is broken still takes them).
        const message = (err as Error).message;
        this.reconcileRetryAt = Date.now() + this.config.sync.retryMaxMs;
        repo.setState(SYNC_STATE.lastError, `reconciliation: ${message}`);
        this.deps.log.warn({ error: message }, 'reconciliation with the receiver failed; trying again later');
      }
    }
    return this.sendNext(repo, Boolean(now));
  }

  private async sendNext(repo: SyncRepository, asked: boolean): Promise<number> {
    const batch = this.sender!.next(this.sending);
    if (!batch) return asked ? 0 : this.config.sync.idleMs;
    this.sending.add(batch.key);
    try {
      return await this.send(repo, batch);
    } finally {
      this.sending.delete(batch.key);
    }
  }

  private async send(repo: SyncRepository, batch: StoredBatch): Promise<number> {
    const end = this.latency.startTimer();
    const outcome: BatchOutcome = await this.sender!.send(batch);
    end();
    this.batches.inc({ result: outcome.kind });
    switch (outcome.kind) {
      case 'answered': {
        for (const [status, n] of Object.entries(outcome.counts)) this.sent.inc({ status }, n);
        this.failures = 0;
        // Item after item refused alone: the receiver refuses everything (a schema change, a proxy): pause rather than dead-letter the inventory.
        this.refusedStreak = outcome.counts.applied || outcome.counts.stale ? 0 : this.refusedStreak + (outcome.counts['dead-letter'] ?? 0);
        if (this.refusedStreak >= REFUSED_STREAK) {
          this.pause(repo, `the receiver refused ${this.refusedStreak} items in a row, each alone (last: batch ${batch.key}); they are in the dead letters`);
          return this.config.sync.idleMs;
        }
        const at = new Date();
        repo.setState(SYNC_STATE.lastSuccess, at.toISOString());
        repo.setState(SYNC_STATE.connected, true);
        repo.setState(SYNC_STATE.lastError, undefined);
        this.lastSuccess.set(at.getTime() / 1000);
        return 0;
      }
      case 'split':
        return 0;
      case 'unauthorized': {
        // Sent with a token since replaced (the other worker reread it): try again with the new one.
        if (outcome.tokenVersion !== undefined && outcome.tokenVersion !== this.client!.tokenVersion) return 0;
        // The token may have been replaced in its file since it was read: read once more, and try again with it.
        if (this.client!.rereadToken()) return 0;
        this.pause(repo, outcome.message);
        return this.config.sync.idleMs;
      }
      case 'throttled': {
        repo.setState(SYNC_STATE.lastError, outcome.message);
        this.failures += 1;
        // At least retryInitialMs: a Retry-After of 0 (or a date past) is no licence for a tight loop.
        const wait = Math.max(outcome.retryAfterMs ?? this.backoff(batch.attempts + 1), this.config.sync.retryInitialMs);
        this.holdUntil = Math.max(this.holdUntil, Date.now() + wait);
        return wait;
      }
      case 'failed':
      default: {
        repo.setState(SYNC_STATE.lastError, outcome.message);
        repo.setState(SYNC_STATE.connected, outcome.unreachable ? false : repo.getState<boolean>(SYNC_STATE.connected) ?? false);
        this.failures += 1;
        this.deps.log.warn({ error: outcome.message, attempts: batch.attempts + 1 }, 'sync batch not delivered; retrying with the same Idempotency-Key');
        // Per batch: a batch that keeps failing backs off even while the other worker's batches go through.
        return this.backoff(batch.attempts + 1);
      }
    }
  }

  /** Full jitter: anything from 0 to min(retryMaxMs, retryInitialMs * 2^failures), `failures` those of a batch or of the loop. */
  private backoff(failures: number = this.failures): number {
    const s = this.config.sync;
    return Math.floor(Math.random() * Math.min(s.retryMaxMs, s.retryInitialMs * 2 ** Math.min(failures, 30)));
  }

  private pause(repo: SyncRepository, reason: string): void {
    repo.setState(SYNC_STATE.paused, reason);
    repo.setState(SYNC_STATE.lastError, reason);
    this.tokenMtime = this.mtime();
    repo.setState(SYNC_STATE.pausedTokenMtime, this.tokenMtime);
    this.paused.set(1);
    this.deps.log.error({ reason }, 'sync paused until the token file changes or edge-agent sync now');
  }

  reload(config: Config): void {
    this.config = config;
    this.wake();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.wake();
    // A request in flight is cut off: its batch stays stored and is sent again, under the same key, at the next start.
    this.client?.close();
    await this.running;
  }
}
