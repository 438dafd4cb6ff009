import { Gauge, type Registry } from 'prom-client';
import type { ConfigurationConfig } from '../config/configurationSchema.js';
import type { Config } from '../config/schema.js';
import { InternalError } from '../errors.js';
import type { EventBus } from '../events.js';
import type { Device, Location, Protocol } from '../inventory/device.js';
import { inventoryBySlices } from '../inventory/slices.js';
import type { Service } from '../lifecycle/service.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import type { Repositories } from '../store/repositories.js';
import type { ProfileDocument } from './profileDocument.js';
import { Deliveries } from './deliveries.js';
import { desiredConfig, refOf, resolveDesired, sameRef, type HeadProfile } from './resolve.js';
import {
  CONFIG_STATUSES,
  type ConfigDeliverer,
  type ConfigStatus,
  type ConfigurationHub,
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

/**
 * The configuration service: computes what each provisioned device should
 * run, commits it, then has the protocol's deliverer send it (the loop in
 * deliveries.ts); records
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
  private readonly deliveries: Deliveries;
  private readonly documents = new Map<string, ProfileDocument>();
  private readonly dirty = new Set<string>();
  private running = false;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private flushQueued = false;

  constructor(private readonly deps: ConfigServiceDeps) {
    this.cfg = deps.config;
    this.log = deps.log;
    const configs = deps.repos.configs;
    this.deliveries = new Deliveries({
      log: deps.log,
      store: deps.store,
      configs,
      config: () => this.cfg,
      document: (name, version) => this.document(name, version),
    });
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
    this.deps.bus.on('device.changed', 'configuration', ({ deviceId }) => this.deviceChanged(deviceId));
    const due = this.deps.store.durable(() => {
      const n = this.deps.repos.configs.dueAtStart(new Date());
      this.reconcile('all');
      return n;
    });
    if (due > 0) this.log.info({ due }, 'configurations not yet confirmed are due again');
    this.reconcileTimer = setInterval(() => this.reconcileAll(), RECONCILE_MS);
    this.reconcileTimer.unref();
    this.deliveries.start();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.deps.bus.off('configuration');
    clearInterval(this.reconcileTimer);
    await this.deliveries.stop();
  }

  reload(config: Config): void {
    this.cfg = config.configuration;
    this.kick();
  }

  // ---- ConfigurationHub

  register(deliverer: ConfigDeliverer): void {
    this.deliveries.register(deliverer);
  }

  unregister(protocol: Protocol): void {
    this.deliveries.unregister(protocol);
  }

  current(protocol: Protocol): DesiredConfig[] {
    const { devices, configs } = this.deps.repos;
    // The devices that have a desired configuration, one by one: not the whole inventory (most devices have none).
    return configs.withDesired(protocol).flatMap((row) => {
      const found = devices.get(row.deviceId);
      const device = found?.protocol === protocol && found.state === 'provisioned' ? found : undefined;
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
      // One change, one row: drifted, or (reapplyOnDrift) pending again at once. The same drift found again only moves its time.
      if (!this.document(ref.profile, ref.version).reapplyOnDrift) {
        configs.update(deviceId, { status: 'drifted', error: detail, checked_at: now }, { event: 'drifted', detail });
        return false;
      }
      configs.update(
        deviceId,
        { status: 'pending', error: detail, checked_at: now, attempts: 0, next_attempt_at: now },
        { event: 'drifted', detail: `${detail} (written again: the profile says reapplyOnDrift)` },
      );
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
    const rows = all ? new Map(configs.all().map((r) => [r.deviceId, r])) : undefined;
    // Without a profile in force nothing is desired: only a device that has a configuration now can change (it is
    // withdrawn), and the others are not read. With profiles, the whole inventory is walked by slices.
    const configured = (id: string) => {
      const row = rows ? rows.get(id) : configs.get(id);
      return row !== undefined && refOf(row) !== null;
    };
    const list: Iterable<Device> =
      heads.length === 0
        ? (all ? [...rows!.keys()] : ids).filter(configured).flatMap((id) => devices.get(id) ?? [])
        : all
          ? inventoryBySlices(devices)
          : ids.flatMap((id) => devices.get(id) ?? []);
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
    // The dry run's reads (a row per device changed, by the hundred during an enrollment burst) in one read transaction.
    const moved = this.deps.store.reading(() => this.reconcile(ids, this.heads(), true).length > 0);
    if (moved) this.deps.store.durable(() => this.reconcile(ids));
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

  /** Looks for delivery work soon (once per turn of the event loop, however often it is asked). */
  kick(): void {
    this.deliveries.kick();
  }
}
