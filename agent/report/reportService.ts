import { Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { ProfileName } from '../../certs/profiles/profile.js';
import type { CertificateRecord, ListFilter } from '../../certs/store.js';
import type { Config } from '../config/schema.js';
import type { EventBus } from '../events.js';
import type { ReportConfig } from '../config/reportSchema.js';
import type { Device } from '../inventory/device.js';
import { inventoryBySlices } from '../inventory/slices.js';
import type { Service } from '../lifecycle/service.js';
import type { Logger } from '../log.js';
import type { ReportRepository } from '../store/reportRepository.js';
import { capPerKind, evaluate } from './evaluator.js';
import { PatchPolicy } from './patchPolicy.js';
import type { SightingRecorder } from './sightings.js';
import { FINDING_KINDS, type Finding, type FindingKind } from './types.js';

export interface ReportServiceDeps {
  log: Logger;
  config: ReportConfig;
  reports: ReportRepository;
  /** The inventory by slices in a stable order (DeviceRepository.slice): an evaluation holds one slice at a time, not every device. */
  devices: { slice(filter: Record<string, never>, order: undefined, limit: number, offset: number): Device[] };
  certificates: { list(filter: ListFilter): CertificateRecord[] };
  sightings: SightingRecorder;
  registry: Registry;
  /** Told when upstream events were queued (the sync sends them at once). */
  bus?: EventBus;
  /**
   * Whether the upstream sync is on: findings' events are queued only then. With the sync off nothing would ever
   * send or delete them, and the report itself (API, CLI, metrics, log) shows the findings.
   */
  upstream?: () => boolean;
}

/** What GET /api/v1/report answers. */
export interface ReportView {
  generatedAt: string;
  counts: Record<FindingKind, number>;
  findings: Finding[];
}

const DAY_MS = 86_400_000;
const DEVICE_PROFILES: readonly ProfileName[] = ['mqtt-device', 'opcua-application'];
/** An evaluation this recent answers a request for the report: a burst of requests costs one. */
const FRESH_MS = 1_000;
/** Resolved findings are kept this long (the report shows open ones; the history is for the database's reader). */
const RESOLVED_KEPT_MS = 90 * DAY_MS;

/**
 * "Every device accounted for" (docs/report.md): evaluates the findings
 * every report.intervalSeconds and on request, and commits what opened and
 * resolved with their upstream events in one transaction, only when
 * something changed (ReportRepository.reconcile); at most OPEN_PER_KIND
 * open findings per kind (capPerKind). A finding's first appearance is logged once
 * as an alarm; the open findings are the gauge edge_agent_report_findings{kind}.
 */
export class ReportService implements Service {
  readonly name = 'report';
  private config: ReportConfig;
  private policy: PatchPolicy;
  private timer: NodeJS.Timeout | undefined;
  private last: Date | undefined;
  private readonly lastEvaluation: Gauge;
  private counts: Record<string, number> = {};

  constructor(private readonly deps: ReportServiceDeps) {
    this.config = deps.config;
    this.policy = new PatchPolicy(deps.config.patchPolicy);
    const self = this;
    new Gauge({
      name: 'edge_agent_report_findings',
      help: 'Open findings of the device report, by kind (docs/report.md)',
      labelNames: ['kind'],
      registers: [deps.registry],
      collect() {
        for (const kind of FINDING_KINDS) this.set({ kind }, self.counts[kind] ?? 0);
      },
    });
    this.lastEvaluation = new Gauge({
      name: 'edge_agent_report_evaluated_timestamp_seconds',
      help: 'Unix time of the last evaluation of the device report',
      registers: [deps.registry],
    });
  }

  get enabled(): boolean {
    return this.config.enabled;
  }

  async start(): Promise<void> {
    this.deps.sightings.setWindow(this.config.sightingDays);
    this.deps.sightings.start();
    this.counts = this.deps.reports.countOpenByKind();
    // The first evaluation reads the whole inventory: it waits for started(), off the agent's way to READY.
    this.schedule(false);
  }

  /** The agent is up (READY sent): the first evaluation now, then every report.intervalSeconds. */
  started(): void {
    setImmediate(() => this.timer && this.safeEvaluate());
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    this.deps.sightings.stop();
  }

  reload(config: Config): void {
    this.config = config.report;
    this.policy = new PatchPolicy(config.report.patchPolicy);
    this.deps.sightings.setWindow(config.report.sightingDays);
    this.schedule();
  }

  /** Every intervalSeconds; `now`, also at once (a reload: the new policy judges at once). */
  private schedule(now = true): void {
    clearInterval(this.timer);
    this.timer = undefined;
    if (!this.config.enabled) return;
    this.timer = setInterval(() => this.safeEvaluate(), this.config.intervalSeconds * 1000);
    if (now) setImmediate(() => this.timer && this.safeEvaluate());
  }

  private safeEvaluate(): void {
    try {
      this.evaluate({ prune: true });
    } catch (err) {
      this.deps.log.error({ err }, 'device report could not be evaluated');
    }
  }

  /**
   * Evaluates now (sightings written first), writes what opened, resolved
   * or changed (nothing when nothing did; ReportRepository.reconcile), logs
   * each new finding once, and returns when it ran. A request within a
   * second of the last evaluation reuses it. `prune` (the scheduled
   * evaluations) also forgets old sightings and resolved findings: a
   * request for the report writes only what the findings need.
   */
  evaluate(options: { reuseWithinMs?: number; prune?: boolean } = {}): Date {
    const now = new Date();
    if (this.last && now.getTime() - this.last.getTime() < (options.reuseWithinMs ?? 0)) return this.last;
    const c = this.config;
    this.deps.sightings.flush();
    const expiring = DEVICE_PROFILES.flatMap((profile) =>
      this.deps.certificates.list({ profile, status: 'valid', expiringBefore: new Date(now.getTime() + c.expiringDays * DAY_MS), limit: 1_000_000 }),
    );
    const found = capPerKind(
      evaluate({
        now,
        devices: inventoryBySlices(this.deps.devices),
        sightings: this.deps.reports.sightingsSince(new Date(now.getTime() - c.sightingDays * DAY_MS)),
        expiring,
        policy: this.policy,
        staleDays: c.staleDays,
        expiringDays: c.expiringDays,
      }),
      this.deps.reports.openKeys(),
    );
    const queue = this.deps.upstream?.() ?? false;
    const { opened, resolved } = this.deps.reports.reconcile(found, now, { events: queue });
    if (queue && opened.length + resolved.length > 0) this.deps.bus?.emit('report.eventsQueued', { count: opened.length + resolved.length });
    for (const f of opened)
      this.deps.log.warn({ findingId: f.id, kind: f.kind, subject: f.subject, deviceId: f.deviceId, summary: f.summary }, 'report finding opened');
    for (const f of resolved) this.deps.log.info({ findingId: f.id, kind: f.kind, subject: f.subject, deviceId: f.deviceId }, 'report finding resolved');
    if (options.prune) {
      this.deps.reports.pruneSightings(new Date(now.getTime() - c.sightingDays * DAY_MS));
      this.deps.reports.pruneResolved(new Date(now.getTime() - RESOLVED_KEPT_MS));
    }
    this.counts = this.deps.reports.countOpenByKind();
    this.lastEvaluation.set(now.getTime() / 1000);
    this.last = now;
    return now;
  }

  /** The report, evaluated fresh (or within the last second), optionally of one kind. */
  view(kind?: FindingKind): ReportView {
    const at = this.evaluate({ reuseWithinMs: FRESH_MS });
    const findings = this.deps.reports.open(kind);
    const counts = Object.fromEntries(FINDING_KINDS.map((k) => [k, 0])) as Record<FindingKind, number>;
    for (const [k, n] of Object.entries(this.counts)) if (k in counts) counts[k as FindingKind] = n;
    return { generatedAt: at.toISOString(), counts, findings };
  }
}
