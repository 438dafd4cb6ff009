import type { ConfigurationConfig } from '../config/configurationSchema.js';
import { describeError } from '../errors.js';
import type { Protocol } from '../inventory/device.js';
import type { Logger } from '../log.js';
import type { ConfigRepository, DeviceConfigRow } from '../store/configRepository.js';
import type { Store } from '../store/database.js';
import type { ProfileDocument } from './profileDocument.js';
import { desiredConfig, refOf, sameRef } from './resolve.js';
import type { ConfigDeliverer, DeliveryOutcome, DesiredConfig } from './types.js';

export interface DeliveriesDeps {
  log: Logger;
  store: Store;
  configs: ConfigRepository;
  /** The configuration in force (it may be reloaded). */
  config: () => ConfigurationConfig;
  /** A profile version's document. */
  document: (name: string, version: number) => ProfileDocument;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The delivery loop of the configuration service: has each protocol's
 * deliverer send the rows due (at most `configuration.concurrency` at a
 * time, one thing at a time per device), records each outcome (retries
 * with backoff), and takes back withdrawn configurations.
 */
export class Deliveries {
  private readonly deliverers = new Map<Protocol, ConfigDeliverer>();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly withdrawing = new Set<string>();
  private running = false;
  private abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private kickQueued = false;

  constructor(private readonly deps: DeliveriesDeps) {}

  private get log(): Logger {
    return this.deps.log;
  }

  start(): void {
    this.running = true;
    this.abort = new AbortController();
    this.kick();
  }

  /** Stops looking for work, aborts the deliveries under way and waits for them. */
  async stop(): Promise<void> {
    this.running = false;
    this.abort.abort();
    clearTimeout(this.timer);
    await Promise.allSettled([...this.inflight.values()]);
  }

  register(deliverer: ConfigDeliverer): void {
    this.deliverers.set(deliverer.protocol, deliverer);
    this.kick();
  }

  unregister(protocol: Protocol): void {
    this.deliverers.delete(protocol);
  }

  /** Looks for work soon (once per turn of the event loop, however often it is asked). */
  kick(): void {
    if (!this.running || this.kickQueued) return;
    this.kickQueued = true;
    setImmediate(() => {
      this.kickQueued = false;
      try {
        this.pump();
      } catch (err) {
        this.log.error({ err }, 'configuration delivery could not be scheduled');
      }
    });
  }

  private pump(): void {
    if (!this.running) return;
    clearTimeout(this.timer);
    const { configs } = this.deps;
    const protocols = [...this.deliverers.keys()];
    // One thing at a time per device: a withdrawal and a delivery that overtook each other could leave the wrong message retained.
    for (const w of configs.withdrawals(protocols)) if (!this.withdrawing.has(w.deviceId) && !this.inflight.has(w.deviceId)) void this.withdraw(w);
    const free = this.deps.config().concurrency - this.inflight.size;
    let started = 0;
    if (free > 0) {
      for (const row of configs.due(new Date(), protocols, free + this.inflight.size)) {
        if (started >= free) break;
        if (this.inflight.has(row.deviceId) || this.withdrawing.has(row.deviceId)) continue;
        started++;
        const run = this.deliver(row)
          .catch((err: unknown) => this.log.error({ err, deviceId: row.deviceId }, 'configuration delivery failed unexpectedly'))
          .finally(() => {
            this.inflight.delete(row.deviceId);
            this.kick();
          });
        this.inflight.set(row.deviceId, run);
      }
    }
    const next = configs.nextDue(protocols);
    if (!next) return;
    const wait = next.getTime() - Date.now();
    // Due already: a delivery under way kicks when it ends.
    if (wait > 0 || (started === 0 && this.inflight.size === 0)) {
      this.timer = setTimeout(() => this.kick(), Math.min(Math.max(wait, 10), MAX_TIMER_MS));
      this.timer.unref();
    }
  }

  private async deliver(row: DeviceConfigRow & { protocol: Protocol; name: string }): Promise<void> {
    const deliverer = this.deliverers.get(row.protocol);
    const ref = refOf(row);
    if (!deliverer || !ref) return;
    const { store, configs } = this.deps;
    const desired = desiredConfig({ id: row.deviceId, protocol: row.protocol, name: row.name }, ref, this.deps.document(ref.profile, ref.version));
    // Not due while under way; a crash now leaves it pending, due again at the next start.
    store.transaction(() => configs.update(row.deviceId, { next_attempt_at: null, attempts: row.attempts + 1 }));
    let outcome: DeliveryOutcome;
    try {
      outcome = await deliverer.deliver(desired, this.abort.signal);
    } catch (err) {
      outcome = { kind: 'failed', reason: describeError(err), retry: true };
    }
    store.transaction(() => this.record(desired, outcome, row.attempts + 1));
  }

  /** A delivery's outcome, unless the desired state moved on meanwhile (then the new one is due). */
  private record(desired: DesiredConfig, outcome: DeliveryOutcome, attempts: number): void {
    const { configs } = this.deps;
    const row = configs.get(desired.deviceId);
    const ref = row && refOf(row);
    if (!row || !sameRef(ref ?? null, desired)) return;
    const now = new Date();
    const at = now.toISOString();
    if (outcome.kind === 'published') {
      configs.update(desired.deviceId, { published_version: desired.version, published_at: at }, { event: 'published', detail: desired.sha256 });
    } else if (outcome.kind === 'verified') {
      configs.update(
        desired.deviceId,
        {
          published_version: desired.version,
          published_at: at,
          reported_version: desired.version,
          reported_sha256: desired.sha256,
          reported_at: at,
          checked_at: at,
          status: 'in_sync',
          error: null,
        },
        { event: 'verified', detail: desired.sha256 },
      );
    } else if (row.status !== 'pending') {
      return;
    } else if (!outcome.retry) {
      configs.update(desired.deviceId, { status: 'failed', error: outcome.reason }, { event: 'failed', detail: outcome.reason });
      this.log.warn({ deviceId: desired.deviceId, profile: desired.profile, version: desired.version, reason: outcome.reason }, 'configuration failed');
    } else {
      const delay = Math.min(this.deps.config().retryInitialMs * 2 ** Math.min(attempts - 1, 30), this.deps.config().retryMaxMs);
      const next = new Date(now.getTime() + delay).toISOString();
      configs.update(
        desired.deviceId,
        { error: outcome.reason, next_attempt_at: next },
        // One row for a run of retries, its detail the latest.
        { event: 'retry', detail: `${outcome.reason} (attempt ${attempts}, next try ${next})`, replace: true },
      );
      this.log.info({ deviceId: desired.deviceId, reason: outcome.reason, retryInMs: delay }, 'configuration delivery failed; will retry');
    }
  }

  private async withdraw(w: { deviceId: string; name: string; protocol: Protocol }): Promise<void> {
    const deliverer = this.deliverers.get(w.protocol);
    if (!deliverer) return;
    this.withdrawing.add(w.deviceId);
    try {
      await deliverer.withdraw({ deviceId: w.deviceId, name: w.name });
      this.deps.store.transaction(() => {
        // Only if nothing new was wanted meanwhile.
        if (this.deps.configs.get(w.deviceId)?.profile === undefined) this.deps.configs.update(w.deviceId, { published_version: null, published_at: null });
      });
      // A delivery held back while it ran may go now (a failed withdrawal waits for the next periodic look instead).
      this.withdrawing.delete(w.deviceId);
      this.kick();
    } catch (err) {
      this.log.warn({ err, deviceId: w.deviceId }, 'configuration could not be withdrawn; tried again later');
    } finally {
      this.withdrawing.delete(w.deviceId);
    }
  }
}
