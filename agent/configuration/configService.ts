import { Gauge, type Registry } from 'prom-client';
import type { ConfigurationConfig } from '../config/configurationSchema.js';
import type { Config } from '../config/schema.js';
import { describeError, InternalError } from '../errors.js';
import type { EventBus } from '../events.js';
import type { Location, Protocol } from '../inventory/device.js';
import type { Service } from '../lifecycle/service.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import type { DeviceConfigRow } from '../store/configRepository.js';
import type { Repositories } from '../store/repositories.js';
import type { ProfileDocument } from './profileDocument.js';
import { desiredConfig, resolveDesired, type DesiredRef, type HeadProfile } from './resolve.js';
import {
  CONFIG_STATUSES,
  type ConfigDeliverer,
  type ConfigStatus,
  type ConfigurationHub,
  type DeliveryOutcome,
  type DesiredConfig,
  type DeviceReport,
  type Observation,
} from './types.js';

export interface ConfigServiceDeps {
  log: Logger;
  config: ConfigurationConfig;
  store: Store;
  repos: Pick<Repositories, 'devices' | 'configs'>;
  bus: Pick<EventBus, 'on' | 'off'>;
  registry: Registry;
  /** The gateway's location (sync.location): what a device's location lacks is taken from it. */
  gateway: () => Location;
}

/** A device whose desired configuration a change moves (or would move, in a dry run). */
export interface Affected {
  deviceId: string;
  from: { profile: string; version: number } | null;
  to: { profile: string; version: number } | null;
}

/** How often every device's desired state is computed again (changes made by another process, the CLI on the database). */
const RECONCILE_MS = 60_000;
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The configuration service: computes what each provisioned device should
 * run, commits it, then has the protocol's deliverer send it; records
 * reports, read-backs and drift (contract of issue 17, "Status rules").
 * Everything it decides is in the database first: after a crash, the rows
 * still pending are sent again with the same version and SHA-256, which a
 * device applies once. Profile management (profileManager.ts) uses
 * `reconcile` inside its own transactions.
 */
export class ConfigService implements Service, ConfigurationHub {
  readonly name = 'configuration';
  private cfg: ConfigurationConfig;
  private readonly log: Logger;
  private readonly deliverers = new Map<Protocol, ConfigDeliverer>();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly withdrawing = new Set<string>();
  private readonly documents = new Map<string, ProfileDocument>();
  private readonly dirty = new Set<string>();
  private running = false;
  private abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private kickQueued = false;
  private flushQueued = false;

  constructor(private readonly deps: ConfigServiceDeps) {
    this.cfg = deps.config;
    this.log = deps.log;
    const configs = deps.repos.configs;
    new Gauge({
      name: 'edge_agent_device_config',
      help: 'Devices by configuration status: none, pending, in_sync, drifted, failed',
      labelNames: ['status'],
      registers: [deps.registry],
      collect() {
        const counts = configs.countsByStatus();
        for (const s of CONFIG_STATUSES) this.set({ status: s }, counts[s] ?? 0);
      },
    });
  }

  async start(): Promise<void> {
    this.running = true;
    this.abort = new AbortController();
    this.deps.bus.on('device.changed', 'configuration', ({ deviceId }) => this.deviceChanged(deviceId));
    const due = this.deps.store.durable(() => {
      const n = this.deps.repos.configs.dueAtStart(new Date());
      this.reconcile('all');
      return n;
    });
    if (due > 0) this.log.info({ due }, 'configurations not yet confirmed are due again');
    this.reconcileTimer = setInterval(() => this.reconcileAll(), RECONCILE_MS);
    this.reconcileTimer.unref();
    this.kick();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.deps.bus.off('configuration');
    this.abort.abort();
    clearTimeout(this.timer);
    clearInterval(this.reconcileTimer);
    await Promise.allSettled([...this.inflight.values()]);
  }

  reload(config: Config): void {
    this.cfg = config.configuration;
    this.kick();
  }

  // ---- ConfigurationHub

  register(deliverer: ConfigDeliverer): void {
    this.deliverers.set(deliverer.protocol, deliverer);
    this.kick();
  }

  unregister(protocol: Protocol): void {
    this.deliverers.delete(protocol);
  }

  current(protocol: Protocol): DesiredConfig[] {
    const { devices, configs } = this.deps.repos;
    const byId = new Map(devices.list({ protocol, state: 'provisioned' }).map((d) => [d.id, d]));
    return configs.withDesired(protocol).flatMap((row) => {
      const device = byId.get(row.deviceId);
      const ref = refOf(row);
      return device && ref ? [desiredConfig(device, ref, this.document(ref.profile, ref.version))] : [];
    });
  }

  reported(protocol: Protocol, name: string, report: DeviceReport): { accepted: boolean; status?: ConfigStatus; reason?: string } {
    const { devices, configs } = this.deps.repos;
    return this.deps.store.transaction(() => {
      const device = devices.byName(protocol, name);
      if (!device) return { accepted: false, reason: `no device ${protocol}:${name}` };
      const row = configs.get(device.id);
      const ref = row && refOf(row);
      const what = `${report.profile} version ${report.version}`;
      if (!row || !ref) return { accepted: false, reason: `${what} was never sent to ${device.id}: it has no configuration` };
      if (report.profile === ref.profile && report.version === ref.version && (report.sha256 === undefined || report.sha256 === ref.sha256)) {
        const status: ConfigStatus = report.status === 'applied' ? 'in_sync' : 'failed';
        const error = report.status === 'refused' ? (report.error ?? 'refused (the device gave no reason)') : null;
        const now = new Date().toISOString();
        // The same report again (a device that repeats itself) only moves the time of its last report.
        const again = row.status === status && row.reportedVersion === report.version && (row.error ?? null) === error;
        configs.update(
          device.id,
          { status, error, reported_version: report.version, reported_sha256: ref.sha256, reported_at: now, next_attempt_at: null },
          again ? undefined : { event: report.status === 'applied' ? 'applied' : 'refused', ...(error ? { detail: error } : {}) },
        );
        return { accepted: true, status };
      }
      if (configs.wasSent(device.id, report.profile, report.version, report.sha256)) {
        configs.update(device.id, {}, { event: 'report_of_earlier', profile: report.profile, version: report.version, detail: report.status });
        return { accepted: true, status: row.status, reason: `${what} was sent earlier; ${ref.profile} version ${ref.version} is wanted now` };
      }
      return { accepted: false, reason: `${what}${report.sha256 ? ` (sha256 ${report.sha256.slice(0, 12)}…)` : ''} was never sent to ${device.id}` };
    });
  }

  observed(deviceId: string, observation: Observation): void {
    const { configs } = this.deps.repos;
    const now = new Date().toISOString();
    const redeliver = this.deps.store.transaction(() => {
      const row = configs.get(deviceId);
      const ref = row && refOf(row);
      if (!row || !ref) return false;
      if (observation.differences.length === 0) {
        configs.update(
          deviceId,
          { status: 'in_sync', error: null, checked_at: now },
          row.status === 'in_sync' ? undefined : { event: 'checked', detail: 'values as desired' },
        );
        return false;
      }
      const detail = observation.differences
        .map((d) => `${d.key}: expected ${JSON.stringify(d.expected)}, read ${d.error ?? JSON.stringify(d.actual)}`)
        .join('; ');
      // The same drift found again is not logged again.
      const known = row.status === 'drifted' && row.error === detail;
      configs.update(deviceId, { status: 'drifted', error: detail, checked_at: now }, known ? undefined : { event: 'drifted', detail });
      if (!this.document(ref.profile, ref.version).reapplyOnDrift) return false;
      configs.update(deviceId, { status: 'pending', attempts: 0, next_attempt_at: now }, { event: 'reapply', detail: 'the profile says reapplyOnDrift' });
      return true;
    });
    if (redeliver) this.kick();
  }

  // ---- desired state

  /**
   * Computes the desired state of the devices named (or all) from `heads`
   * (the profiles in force, or a trial set for a dry run) and, unless
   * `dryRun`, commits each change: pending and due now, or withdrawn. Must
   * run inside a transaction; delivery starts after its commit.
   */
  reconcile(ids: readonly string[] | 'all', heads: readonly HeadProfile[] = this.heads(), dryRun = false): Affected[] {
    const { devices, configs } = this.deps.repos;
    const gateway = this.deps.gateway();
    const all = ids === 'all';
    const list = all ? devices.list() : ids.flatMap((id) => devices.get(id) ?? []);
    const rows = all ? new Map(configs.all().map((r) => [r.deviceId, r])) : undefined;
    const labels = all ? configs.allLabels() : undefined;
    const affected: Affected[] = [];
    const now = new Date().toISOString();
    for (const device of list) {
      const row = rows ? rows.get(device.id) : configs.get(device.id);
      const want = resolveDesired(device, row?.pinnedProfile, (labels ? labels.get(device.id) : configs.labels(device.id)) ?? {}, heads, gateway);
      const have = row ? refOf(row) : null;
      if (sameRef(have, want)) continue;
      affected.push({
        deviceId: device.id,
        from: have ? { profile: have.profile, version: have.version } : null,
        to: want ? { profile: want.profile, version: want.version } : null,
      });
      if (dryRun) continue;
      if (want) {
        configs.update(
          device.id,
          {
            profile: want.profile,
            desired_version: want.version,
            desired_sha256: want.sha256,
            desired_at: now,
            published_version: null,
            published_at: null,
            status: 'pending',
            error: null,
            attempts: 0,
            next_attempt_at: now,
          },
          { event: 'desired', detail: want.sha256 },
        );
      } else {
        // What was published may still be on the broker: it is taken back once the deliverer runs (withdrawals()).
        configs.update(
          device.id,
          {
            profile: null,
            desired_version: null,
            desired_sha256: null,
            status: 'none',
            error: null,
            next_attempt_at: null,
            published_version: row?.publishedVersion ?? row?.desiredVersion ?? null,
          },
          {
            event: 'withdrawn',
            profile: have!.profile,
            version: have!.version,
            detail: device.state === 'provisioned' ? 'no profile applies' : `device ${device.state}`,
          },
        );
      }
    }
    if (!dryRun && affected.length > 0) this.deps.store.afterCommit('configuration.kick', () => this.kick());
    return affected;
  }

  /** Every profile at its head. */
  heads(): HeadProfile[] {
    return this.deps.repos.configs.heads().map((h) => ({ name: h.name, version: h.version, document: h.document }));
  }

  /**
   * Commits what a device change or the periodic look moves, fsynced before
   * anything is sent (a dry run first: most looks move nothing, and cost no fsync).
   */
  private commitReconcile(ids: readonly string[] | 'all'): void {
    if (this.reconcile(ids, this.heads(), true).length > 0) this.deps.store.durable(() => this.reconcile(ids));
  }

  private reconcileAll(): void {
    try {
      this.commitReconcile('all');
    } catch (err) {
      this.log.error({ err }, 'desired configuration could not be computed');
    }
    // Also what waits without a timer: a withdrawal that failed.
    this.kick();
  }

  /** A device changed (provisioned, moved, decommissioned): looked at once the current burst of changes is over. */
  private deviceChanged(deviceId: string): void {
    if (!this.running) return;
    this.dirty.add(deviceId);
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(() => {
      this.flushQueued = false;
      const ids = [...this.dirty];
      this.dirty.clear();
      if (!this.running || ids.length === 0) return;
      try {
        this.commitReconcile(ids);
      } catch (err) {
        this.log.error({ err, devices: ids.length }, 'desired configuration could not be computed');
      }
    });
  }

  /** A profile version's document (versions never change, so each is read once). */
  private document(name: string, version: number): ProfileDocument {
    const key = `${name}@${version}`;
    let doc = this.documents.get(key);
    if (!doc) {
      doc = this.deps.repos.configs.version(name, version)?.document;
      if (!doc) throw new InternalError(`profile ${key} is not stored`);
      this.documents.set(key, doc);
    }
    return doc;
  }

  // ---- delivery

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
    const { configs } = this.deps.repos;
    const protocols = [...this.deliverers.keys()];
    // One thing at a time per device: a withdrawal and a delivery that overtook each other could leave the wrong message retained.
    for (const w of configs.withdrawals(protocols)) if (!this.withdrawing.has(w.deviceId) && !this.inflight.has(w.deviceId)) void this.withdraw(w);
    const free = this.cfg.concurrency - this.inflight.size;
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
    const { store, repos } = this.deps;
    const desired = desiredConfig({ id: row.deviceId, protocol: row.protocol, name: row.name }, ref, this.document(ref.profile, ref.version));
    // Not due while under way; a crash now leaves it pending, due again at the next start.
    store.transaction(() => repos.configs.update(row.deviceId, { next_attempt_at: null, attempts: row.attempts + 1 }));
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
    const { configs } = this.deps.repos;
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
      const delay = Math.min(this.cfg.retryInitialMs * 2 ** Math.min(attempts - 1, 30), this.cfg.retryMaxMs);
      const next = new Date(now.getTime() + delay).toISOString();
      configs.update(desired.deviceId, { error: outcome.reason, next_attempt_at: next }, { event: 'retry', detail: `${outcome.reason} (next try ${next})` });
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
        if (this.deps.repos.configs.get(w.deviceId)?.profile === undefined)
          this.deps.repos.configs.update(w.deviceId, { published_version: null, published_at: null });
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

function refOf(row: Pick<DeviceConfigRow, 'profile' | 'desiredVersion' | 'desiredSha256'>): DesiredRef | null {
  return row.profile !== undefined && row.desiredVersion !== undefined && row.desiredSha256 !== undefined
    ? { profile: row.profile, version: row.desiredVersion, sha256: row.desiredSha256 }
    : null;
}

const sameRef = (a: DesiredRef | null, b: DesiredRef | null): boolean => a?.profile === b?.profile && a?.version === b?.version && a?.sha256 === b?.sha256;
