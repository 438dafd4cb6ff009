import type { CaService } from '../ca/caService.js';
import { ensureAgentClient } from '../ca/localIdentity.js';
import type { Config } from '../config/schema.js';
import type { EventBus } from '../events.js';
import type { Service } from '../lifecycle/service.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/database.js';
import type { Repositories } from '../store/repositories.js';
import type { SyncRepository, StoredBatch } from '../store/syncRepository.js';
import { EventSender } from './eventSender.js';
import { EventWorker } from './eventWorker.js';
import { upstreamItem, type Location } from './record.js';
import { ReconcileSchedule } from './reconcileSchedule.js';
import { BatchSchedule } from './schedule.js';
import { SyncSender, type BatchOutcome } from './sender.js';
import { SyncMetrics } from './syncMetrics.js';
import { SyncPause } from './syncPause.js';
import { SYNC_STATE } from './syncState.js';
import { UpstreamClient } from './upstreamClient.js';
import { Wakeups } from './wakeups.js';

export { SYNC_STATE } from './syncState.js';

export interface SyncServiceDeps {
  log: Logger;
  config: Config['sync'];
  /** The gateway's id (the default sync.gatewayId) and data directory (restart-only). */
  agent: { id: string; dataDir: string };
  store: Store;
  repos: Pick<Repositories, 'sync' | 'certificates'>;
  ca: CaService;
  metrics: Metrics;
  /**
   * Where the API says that a technician asked for a sync, and where committed
   * changes are told (device.changed, certificate.issued): the workers look
   * at once. Optional: the outbox and the requests are also looked at every
   * sync.idleMs (what another process, the CLI with --local, leaves).
   */
  bus?: EventBus;
}

/** Items refused alone in a row before the sync pauses instead of dead-lettering more. */
const REFUSED_STREAK = 20;
/** Batches in flight at once (one worker each); also how many may wait for a retry before no new one is built. */
const IN_FLIGHT = 2;

/**
 * Sends the inventory upstream (docs/upstream-api.md): builds batches from
 * the outbox, stores each before it is sent, and sends each under the same
 * Idempotency-Key until the receiver answers, on a retry schedule of its own
 * (backoff with full jitter, Retry-After honoured) while the other worker
 * goes on with other batches. Splits a batch the receiver refuses (400,
 * 413, 422, or 5xx answered sync.splitAfterServerErrors times) until the
 * item that causes it is found and dead-lettered, and pauses on a 401 that
 * a fresh read of the token does not cure. Reconciles with what the
 * receiver holds at start, every sync.reconcileIntervalMs and on request.
 * `sync now` and SIGHUP end every wait at once.
 */
export class SyncService implements Service {
  readonly name = 'sync';
  private config: Config['sync'];
  private readonly repo: SyncRepository;
  private sender: SyncSender | undefined;
  private client: UpstreamClient | undefined;
  private pauses: SyncPause | undefined;
  private reconciles: ReconcileSchedule | undefined;
  private events: EventWorker | undefined;
  private running: Promise<void> | undefined;
  private stopping = false;
  private readonly waits = new Wakeups();
  private readonly sending = new Set<string>();
  private readonly schedule = new BatchSchedule();
  private readonly m: SyncMetrics;
  private failures = 0;
  private holdUntil = 0;
  /** No new batch is built before this (a receiver that leaves items out of its answers is backed off from). */
  private buildAfter = 0;
  private refusedStreak = 0;
  private nextAttempt: string | undefined;

  constructor(private readonly deps: SyncServiceDeps) {
    this.config = deps.config;
    this.repo = deps.repos.sync;
    this.m = new SyncMetrics(deps.metrics.registry);
  }

  async start(): Promise<void> {
    const { store, log } = this.deps;
    const repo = this.repo;
    this.m.refresh(repo, this.config.stuckAfterMs, log);
    this.pauses = new SyncPause({ log, repo, metrics: this.m, tokenFile: () => this.config.tokenFile });
    this.pauses.start();
    if (!this.config.enabled) return;
    const s = this.config;
    const identity = s.clientCertificate ? await ensureAgentClient(this.deps.ca, { agent: this.deps.agent }, this.deps.log, 'mqtt') : undefined;
    this.client = new UpstreamClient({
      baseUrl: s.baseUrl,
      gatewayId: s.gatewayId || this.deps.agent.id,
      caFile: s.caFile,
      ...(identity ? { clientCertificate: { cert: identity.cert, key: identity.key } } : {}),
      ...(s.tokenFile ? { tokenFile: s.tokenFile } : {}),
      timeoutMs: s.timeoutMs,
    });
    const { certificates } = this.deps.repos;
    this.sender = new SyncSender({
      log,
      store,
      repo,
      client: this.client,
      items: (limit) => {
        const location = this.location();
        return repo
          .awaitingSync(limit)
          .map(({ device, configuration }) =>
            upstreamItem(device, device.certificateSerial ? certificates.get(device.certificateSerial) : undefined, location, configuration),
          );
      },
      limits: () => ({ batchSize: this.config.batchSize, batchMaxBytes: this.config.batchMaxBytes }),
    });
    this.reconciles = new ReconcileSchedule({ log, repo, sender: this.sender, metrics: this.m, config: () => this.config });
    if (s.reconcileOnStart) this.reconciles.request();
    // The events (report findings) go by a worker of their own: a receiver that refuses them never holds the devices up.
    this.events = new EventWorker({
      log,
      repo,
      sender: new EventSender({ store, events: repo.events, client: this.client }),
      client: this.client,
      pauses: this.pauses,
      metrics: this.m,
      config: () => this.config,
      holdUntil: () => this.holdUntil,
      hold: (until) => {
        this.holdUntil = Math.max(this.holdUntil, until);
      },
    });
    // Told after the commit that queued them (agent/store/reportRepository.ts); events another process queued are found every idleMs.
    this.deps.bus?.on('report.eventsQueued', this.name, () => this.events?.nudge());
    this.deps.bus?.on('sync.requested', this.name, () => this.waits.wake());
    // A change in this process: the outbox row is already there, as the triggers of migration 0006 write it in the
    // transaction that changes the device, and the event comes after that commit. So the workers look now, not at idleMs.
    this.deps.bus?.on('device.changed', this.name, () => this.waits.nudge());
    // Told once the certificate is recorded; the device's record is changed in the same commit (the issuance pipeline's
    // one transaction), so the outbox row is there too. Looked at on the next turn of the event loop, after the emitter.
    this.deps.bus?.on('certificate.issued', this.name, () => void setImmediate(() => this.waits.nudge()));
    // A revocation changes the device's record by a trigger (migration 0006), not through the device repository: told here.
    this.deps.bus?.on('certificate.revoked', this.name, () => this.waits.nudge());
    // Every idleMs, even while the workers wait out a backoff: the stuck alarm, and what another process left:
    // a request the CLI left with --local, and changes it made (no event crosses processes: the workers find them at their next look).
    this.waits.poll(
      () => this.config.idleMs,
      () => {
        try {
          this.m.refresh(repo, this.config.stuckAfterMs, log);
          return repo.getState(SYNC_STATE.requestNow) !== undefined || repo.getState(SYNC_STATE.requestReconcile) !== undefined;
        } catch (err) {
          log.warn({ err }, 'sync: looking for requests failed');
          return false;
        }
      },
    );
    this.running = Promise.all(Array.from({ length: IN_FLIGHT }, (_, i) => this.worker(i))).then(() => undefined);
    this.events.start();
  }

  private location(): Location {
    return Object.fromEntries(Object.entries(this.config.location).filter(([, v]) => v !== '')) as Location;
  }

  /**
   * Ends every wait at once (`sync now`, SIGHUP): the backoff of each batch
   * and a Retry-After alike; the workers look again now.
   */
  hurry(reason: string): void {
    this.schedule.wakeAll();
    this.holdUntil = 0;
    this.buildAfter = 0;
    this.deps.log.info({ reason }, 'sync: every wait ended');
    this.events?.hurry();
    this.waits.wake();
  }

  /** IN_FLIGHT workers: while one waits for the receiver, the next builds and sends its batch. */
  private async worker(index: number): Promise<void> {
    const repo = this.repo;
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
      this.m.refresh(repo, this.config.stuckAfterMs, this.deps.log);
      if (delay > 0 && !this.stopping) await this.waits.sleep(delay);
    }
  }

  /** One step of a worker; returns how long to wait before the next. Reconciliation is the first worker's. */
  private async cycle(repo: SyncRepository, worker: number): Promise<number> {
    const s = this.config;
    const now = repo.getState<string>(SYNC_STATE.requestNow);
    if (now) {
      // Cleared only if unchanged: a request the CLI makes meanwhile is not lost.
      repo.clearState(SYNC_STATE.requestNow, now);
      this.hurry('sync now');
    }
    // A receiver that asked for a pause (Retry-After) gets it from every worker.
    if (Date.now() < this.holdUntil) return this.noteNext(repo, this.holdUntil);
    // Paused on a 401: until a technician asks (sync now), or the token file changes.
    const pause = this.pauses!.check(Boolean(now), this.client!);
    if (pause === 'paused') return s.idleMs;
    if (pause === 'resumed') {
      this.refusedStreak = 0;
      this.waits.wake();
    }
    if (worker === 0) await this.reconciles!.runIfDue();
    return this.sendNext(repo);
  }

  /** Sends the oldest batch that is due; builds a new one only while fewer than IN_FLIGHT wait for a retry. */
  private async sendNext(repo: SyncRepository): Promise<number> {
    const now = Date.now();
    const keys = repo.batchKeys();
    const free = (key: string) => !this.sending.has(key);
    const waiting = keys.filter((k) => free(k) && !this.schedule.due(k, now)).length;
    const build = waiting < IN_FLIGHT && now >= this.buildAfter;
    const batch = this.sender!.next((k) => free(k) && this.schedule.due(k, now), build);
    if (!batch) {
      this.schedule.keepOnly(new Set(keys));
      const next = this.schedule.earliest(keys.filter(free), now);
      // Building: look for changes every idleMs. Not building: until the first retry due (or building is allowed again).
      let until = Math.min(next ?? Infinity, build ? now + this.config.idleMs : this.buildAfter > now ? this.buildAfter : Infinity);
      if (!Number.isFinite(until)) until = now + this.config.idleMs;
      return this.noteNext(repo, next, until);
    }
    this.sending.add(batch.key);
    try {
      return await this.send(repo, batch);
    } finally {
      this.sending.delete(batch.key);
    }
  }

  /** Records when the next attempt is due (for sync status) and returns how long to wait for `until` (by default that). */
  private noteNext(repo: SyncRepository, at: number | undefined, until = at ?? Date.now()): number {
    const iso = at !== undefined && at > Date.now() ? new Date(at).toISOString() : undefined;
    if (iso !== this.nextAttempt) repo.setState(SYNC_STATE.nextAttemptAt, iso);
    this.nextAttempt = iso;
    return Math.max(until - Date.now(), 1);
  }

  private async send(repo: SyncRepository, batch: StoredBatch): Promise<number> {
    const sentAt = Date.now();
    const end = this.m.latency.startTimer();
    let outcome: BatchOutcome = await this.sender!.send(batch);
    end();
    if (outcome.kind === 'failed' && outcome.status !== undefined && outcome.status >= 500) outcome = this.serverError(batch, outcome, sentAt);
    this.m.batches.inc({ result: outcome.kind });
    switch (outcome.kind) {
      case 'answered': {
        this.schedule.forget(batch.key);
        for (const [status, n] of Object.entries(outcome.counts)) this.m.sent.inc({ status }, n);
        this.failures = 0;
        if (outcome.counts['dead-letter'] === undefined) this.schedule.accepted();
        // Item after item refused alone: the receiver refuses everything (a schema change, a proxy): pause rather than dead-letter the inventory.
        this.refusedStreak = outcome.counts.applied || outcome.counts.stale ? 0 : this.refusedStreak + (outcome.counts['dead-letter'] ?? 0);
        if (this.refusedStreak >= REFUSED_STREAK) {
          this.pauses!.pause(`the receiver refused ${this.refusedStreak} items in a row, each alone (last: batch ${batch.key}); they are in the dead letters`);
          return this.config.idleMs;
        }
        // Stale at its first send: the receiver holds a newer revision than this agent sent (changed behind its back).
        if (outcome.counts.stale && batch.attempts === 0) this.reconciles!.staleAtFirstSend(batch.key, outcome.counts.stale, sentAt);
        if (this.nextAttempt !== undefined) this.noteNext(repo, this.schedule.earliest(repo.batchKeys()));
        const at = new Date();
        repo.setState(SYNC_STATE.lastSuccess, at.toISOString());
        repo.setState(SYNC_STATE.connected, true);
        repo.setState(SYNC_STATE.lastError, undefined);
        this.m.lastSuccess.set(at.getTime() / 1000);
        return 0;
      }
      case 'split':
        this.schedule.forget(batch.key);
        this.waits.wake();
        return 0;
      case 'unauthorized': {
        // Sent with a token since replaced (the other worker reread it): try again with the new one.
        if (outcome.tokenVersion !== undefined && outcome.tokenVersion !== this.client!.tokenVersion) return 0;
        // The token may have been replaced in its file since it was read: read once more, and try again with it.
        if (this.client!.rereadToken()) return 0;
        this.pauses!.pause(outcome.message);
        return this.config.idleMs;
      }
      case 'throttled': {
        repo.setState(SYNC_STATE.lastError, outcome.message);
        this.failures += 1;
        // At least retryInitialMs: a Retry-After of 0 (or a date past) is no licence for a tight loop.
        const wait = Math.max(outcome.retryAfterMs ?? this.backoff(batch.attempts + 1), this.config.retryInitialMs);
        this.holdUntil = Math.max(this.holdUntil, Date.now() + wait);
        this.schedule.retryAt(batch.key, this.holdUntil);
        return this.noteNext(repo, this.holdUntil);
      }
      case 'failed':
      default: {
        repo.setState(SYNC_STATE.lastError, outcome.message);
        repo.setState(SYNC_STATE.connected, outcome.unreachable ? false : (repo.getState<boolean>(SYNC_STATE.connected) ?? false));
        this.failures += 1;
        // This batch's own schedule: it waits, and the workers go on with other batches meanwhile.
        const retryAt = Date.now() + this.backoff(batch.attempts + 1);
        this.schedule.retryAt(batch.key, retryAt);
        // Answered, but items left out: the batch is gone, and the receiver is backed off from before new ones are built.
        if (outcome.partial) this.buildAfter = retryAt;
        this.deps.log.warn(
          { batch: batch.key, error: outcome.message, attempts: batch.attempts + 1, retryAt: new Date(retryAt).toISOString() },
          'sync batch not delivered; retrying with the same Idempotency-Key',
        );
        return 0;
      }
    }
  }

  /**
   * A 5xx answer (503, a request to wait, excepted). At the
   * sync.splitAfterServerErrors-th for this batch it is split, or its one
   * item dead-lettered, as for a 422, unless the receiver looks down: a
   * half that keeps failing, or an item alone, is only dealt with so while
   * the receiver accepts other batches (docs/upstream-api.md).
   */
  private serverError(batch: StoredBatch, outcome: Extract<BatchOutcome, { kind: 'failed' }>, sentAt: number): BatchOutcome {
    const limit = this.config.splitAfterServerErrors;
    const n = this.schedule.serverError(batch.key, sentAt);
    if (n < limit) return outcome;
    const up = this.schedule.receiverUp(batch.key);
    if (!up && (batch.items.length === 1 || this.schedule.isHalf(batch.key))) {
      if (n === limit)
        this.deps.log.warn(
          { batch: batch.key, items: batch.items.length, answers: n, status: outcome.status },
          'the receiver answers 5xx to this batch and has accepted no other meanwhile: taken for an outage, nothing dead-lettered',
        );
      return outcome;
    }
    this.deps.log.warn(
      { batch: batch.key, items: batch.items.length, answers: n, status: outcome.status },
      'the receiver keeps answering 5xx to this batch: splitting it to find the item at fault',
    );
    const isolated = this.sender!.isolate(batch, outcome.status!, outcome.detail ?? outcome.message);
    if (isolated.kind === 'split') this.schedule.halves(isolated.keys);
    return isolated;
  }

  /** Full jitter: anything from 0 to min(retryMaxMs, retryInitialMs * 2^failures), `failures` those of a batch or of the loop. */
  private backoff(failures: number = this.failures): number {
    const s = this.config;
    return Math.floor(Math.random() * Math.min(s.retryMaxMs, s.retryInitialMs * 2 ** Math.min(failures, 30)));
  }

  /** Takes its slice of a reloaded configuration (sync). */
  reload(config: Config): void {
    this.config = config.sync;
    this.events?.reload();
    this.waits.wake();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.deps.bus?.off(this.name);
    this.waits.stop();
    // A request in flight is cut off: its batch stays stored and is sent again, under the same key, at the next start.
    this.client?.close();
    await Promise.all([this.running, this.events?.stop()]);
  }
}
