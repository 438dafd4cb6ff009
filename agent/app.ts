import { CaService } from './ca/caService.js';
import { EventBus } from './events.js';
import { registerHealthRoutes, type HealthSource } from './api/health.js';
import { HttpService } from './api/httpServer.js';
import { apiUrl, listenerTls } from './api/listener.js';
import { planReload } from './config/diff.js';
import type { LoadedConfig } from './config/load.js';
import type { Config } from './config/schema.js';
import { ConfigError, describeError } from './errors.js';
import { ConfigService } from './configuration/configService.js';
import { ServiceRunner, type ServiceStatus } from './lifecycle/runner.js';
import { InstanceLock } from './lifecycle/instanceLock.js';
import { RunRecorder } from './runs/runRecorder.js';
import type { Service } from './lifecycle/service.js';
import type { SystemdNotifier } from './lifecycle/sdNotify.js';
import type { LogHub, Logger } from './log.js';
import { Metrics } from './metrics.js';
import { MqttService } from './protocols/mqtt/mqttService.js';
import { OpcuaService } from './protocols/opcua/opcuaService.js';
import { SyncService } from './sync/syncService.js';
import { Api } from './api/apiRoutes.js';
import { registerConsole } from './api/consoleAssets.js';
import type { DirectoryConfig } from './config/authSchema.js';
import { ActiveDirectory } from './directory/activeDirectory.js';
import { DirectoryLogins } from './directory/logins.js';
import { SessionWatch } from './directory/sessionWatch.js';
import type { Directory } from './directory/types.js';
import { registerCaRoutes } from './api/caRoutes.js';
import { openRepositories } from './store/repositories.js';
import { StoreService } from './store/storeService.js';
import { AGENT_VERSION } from './version.js';
import { ReportService } from './report/reportService.js';
import { SightingRecorder } from './report/sightings.js';
import { ReportRepository } from './store/reportRepository.js';

export interface AppDeps {
  loaded: LoadedConfig;
  logs: LogHub;
  notifier: SystemdNotifier;
  /** Reads the configuration again for a reload (same file and environment as at start). */
  reread: () => LoadedConfig;
  /** The environment secrets and credentials come from (process.env by default). */
  env?: NodeJS.ProcessEnv;
}

export type ReloadOutcome = 'applied' | 'unchanged' | 'invalid' | 'restart_required';

/** The services built over the open store, in start order. */
interface Parts {
  http: HttpService;
  ca: CaService;
  api: Api;
  runs: RunRecorder;
  report: ReportService;
  sync: SyncService | undefined;
  services: Service[];
}

/**
 * The composition root: the one place that constructs the agent's services,
 * in start order, and owns start, stop and reload. Constructing does no I/O.
 * The instance lock and the store are taken first, then every service is
 * built once over the open store and its repositories, each given the
 * collaborators and the slice of the configuration it uses; the lock and
 * the store are released last (also after a failed start).
 */
export class App implements HealthSource {
  readonly metrics = new Metrics();
  private readonly storage: StoreService;
  private readonly runner: ServiceRunner;
  private readonly log: Logger;
  private parts: Parts | undefined;
  private config: Config;
  private currentPhase: ReturnType<HealthSource['phase']> = 'starting';
  private reloading: Promise<ReloadOutcome> | undefined;
  private reloadAgain = false;

  constructor(private readonly deps: AppDeps) {
    const { logs } = deps;
    this.config = deps.loaded.config;
    this.log = logs.child('app');
    const c = this.config;
    const lock = new InstanceLock({ log: logs.child('lock'), dataDir: c.agent.dataDir });
    this.storage = new StoreService({ log: logs.child('store'), options: c.store });
    this.runner = new ServiceRunner({
      log: logs.child('lifecycle'),
      // The rest are added by compose() once these two are up.
      services: [lock, this.storage],
      timeouts: { startMs: c.lifecycle.startTimeoutMs, stopMs: c.lifecycle.stopTimeoutMs },
      onStateChange: (name, state) => {
        this.metrics.serviceState(name, state);
        if (state === 'starting') deps.notifier.status(`Starting ${name}`);
      },
    });
  }

  /** Builds every service over the open store, in start order. No I/O: each starts in start(). */
  private compose(): Parts {
    const { logs } = this.deps;
    const c = this.config;
    const { store } = this.storage;
    const agent = { id: c.agent.id, dataDir: c.agent.dataDir };
    const metrics = this.metrics;
    const bus = new EventBus(logs.child('events'));
    // Every committed change of a device's record is told on the bus, whoever made it in this process (a route, enrollment,
    // discovery, presence, a push): the sync looks at once. Changes another process makes (the CLI) are found by its poll.
    const repos = openRepositories(store, { deviceChanged: (deviceId) => bus.emit('device.changed', { deviceId }) });
    const runs = new RunRecorder({ log: logs.child('runs'), runLog: repos.runs, metrics, heartbeatIntervalMs: c.agent.heartbeatIntervalMs });
    const ca = new CaService({
      log: logs.child('ca'),
      config: c.ca,
      gatewayId: c.agent.id,
      certificates: repos.certificates,
      metrics,
      bus,
      env: this.deps.env ?? process.env,
    });
    const httpLog = logs.child('http');
    // Called at http start, which comes after the CA's.
    const tls = c.http.tls.enabled ? () => listenerTls(ca, c, httpLog) : undefined;
    const { host, port, names, maxConnections, headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs } = c.http;
    const http = new HttpService({
      log: httpLog,
      host,
      port,
      names,
      limits: { maxConnections, headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs },
      tls,
      ciphers: c.http.tls.ciphers,
      registry: metrics.registry,
    });
    registerHealthRoutes(http, { source: this, metrics });
    registerCaRoutes(http, ca);
    // The directory client of the configuration in force (a reload may change auth.directory; it is built anew then).
    let built: { settings: DirectoryConfig; directory: Directory } | undefined;
    const directoryLog = logs.child('directory');
    const directory = (): Directory | undefined => {
      const settings = this.config.auth.directory;
      if (!settings.enabled) return undefined;
      if (built?.settings !== settings)
        built = { settings, directory: new ActiveDirectory({ log: directoryLog, settings, env: this.deps.env ?? process.env }) };
      return built.directory;
    };
    // The device report (docs/report.md): sightings from the broker and enrollment, findings evaluated by the report service.
    const reports = new ReportRepository(store);
    const sightings = new SightingRecorder({
      log: logs.child('report'),
      reports,
      certificates: repos.certificates,
      devices: repos.devices,
      enabled: () => this.config.report.enabled,
    });
    const report = new ReportService({
      log: logs.child('report'),
      config: c.report,
      reports,
      devices: repos.devices,
      certificates: repos.certificates,
      sightings,
      registry: metrics.registry,
      bus,
      upstream: () => this.config.sync.enabled,
    });
    const directoryConfig = () => this.config.auth.directory;
    const watch = new SessionWatch({ log: directoryLog, config: directoryConfig, directory, store, repos, bus, registry: metrics.registry });
    const logins = new DirectoryLogins({ log: directoryLog, config: directoryConfig, directory, store, repos, registry: metrics.registry, watch });
    // Device configuration (issue 17): built before the API and the protocols (which register their deliverers with it); started after them.
    const configuration = c.configuration.enabled
      ? new ConfigService({
          log: logs.child('configuration'),
          config: c.configuration,
          store,
          repos,
          bus,
          registry: metrics.registry,
          gateway: () => this.config.sync.location,
        })
      : undefined;
    const api = new Api(http, {
      log: logs.child('api'),
      config: () => this.config,
      store,
      repos,
      bus,
      ca,
      registry: metrics.registry,
      logins,
      watch,
      // Asked at request time, once the services below have started.
      brokers: () => mqtt?.endpoints() ?? [],
      configuration,
      report,
    });
    registerConsole(http, { log: logs.child('console') });
    const mqtt = c.mqtt.enabled
      ? new MqttService({
          log: logs.child('mqtt'),
          config: c.mqtt,
          agent,
          crlFile: c.ca.crlFile,
          store,
          repos,
          ca,
          metrics,
          bus,
          configuration,
          configurationTopicRoot: c.configuration.topicRoot,
          sightings,
        })
      : undefined;
    const opcua = c.opcua.enabled
      ? new OpcuaService({
          log: logs.child('opcua'),
          config: c.opcua,
          agent,
          organization: c.ca.organization,
          store,
          repos,
          ca,
          bus,
          configuration,
          configurationConfig: c.configuration,
        })
      : undefined;
    const sync = c.sync.enabled ? new SyncService({ log: logs.child('sync'), config: c.sync, agent, store, repos, ca, metrics, bus }) : undefined;
    const services = [
      runs,
      ca,
      report,
      ...(mqtt ? [mqtt] : []),
      ...(opcua ? [opcua] : []),
      ...(configuration ? [configuration] : []),
      ...(sync ? [sync] : []),
      watch,
      http,
    ];
    return { http, ca, api, runs, report, sync, services };
  }

  phase(): ReturnType<HealthSource['phase']> {
    return this.currentPhase;
  }

  services(): ServiceStatus[] {
    return this.runner.states();
  }

  /** The MQTT service once composed (in-process tools: the configuration benchmark publishes raw through its broker). */
  get mqttService(): MqttService | undefined {
    return this.parts?.services.find((s): s is MqttService => s instanceof MqttService);
  }

  get runningConfig(): Config {
    return this.config;
  }

  /** Starts every service; READY=1 only once all are up. Throws (after stopping what started) if one fails. */
  async start(signal: AbortSignal): Promise<void> {
    const { notifier } = this.deps;
    this.log.info({ version: AGENT_VERSION, node: process.version, config: this.deps.loaded.file, dataDir: this.config.agent.dataDir }, 'edge-agent starting');
    // Until the run recorder exists the agent counts as healthy, as it did while the recorder had not started.
    notifier.startWatchdog(() => this.parts?.runs.healthy() ?? true);
    let parts: Parts;
    try {
      // The lock, then the store: the services are built over the open store.
      await this.runner.startAll(signal);
      try {
        parts = this.parts = this.compose();
      } catch (err) {
        await this.runner.stopAll();
        throw err;
      }
      this.runner.add(parts.services);
      await this.runner.startAll(signal);
    } catch (err) {
      notifier.status(`Failed to start: ${describeError(err)}`);
      throw err;
    }
    try {
      parts.api.bootstrap();
    } catch (err) {
      // Not fatal: an administrator can still make users and tokens with the CLI.
      this.log.error({ err }, 'the first admin token could not be made; use edge-agent users add / tokens create');
    }
    this.currentPhase = 'running';
    const { address, port } = parts.http.address();
    try {
      const url = apiUrl(this.config);
      parts.api.published(this.config.http.port === 0 ? url.replace(/:0$/, `:${port}`) : url);
    } catch (err) {
      this.log.warn({ err }, 'the API address could not be written for the CLI (<dataDir>/api.url)');
    }
    notifier.ready(`Running: ${this.runner.states().length} services up, http on ${address}:${port}`);
    // Work that reads the whole inventory and that readiness does not need starts after READY.
    parts.report.started();
    this.log.info({ services: this.runner.states().map((s) => s.name), http: `${address}:${port}` }, 'edge-agent ready');
  }

  /** Stops in reverse order. Never throws. */
  async stop(reason: string): Promise<void> {
    this.currentPhase = 'stopping';
    const { notifier } = this.deps;
    notifier.stopping(`Stopping (${reason})`);
    this.log.info({ reason }, 'edge-agent stopping');
    await this.reloading?.catch(() => undefined);
    await this.runner.stopAll((name) => notifier.status(`Stopping ${name}`));
    this.log.info('edge-agent stopped');
  }

  /**
   * SIGHUP: reads the file again. An invalid file, or a change to a key that
   * needs a restart, is refused as a whole and logged; the running
   * configuration stays. Otherwise the change is applied live.
   */
  reload(): Promise<ReloadOutcome> {
    if (this.currentPhase === 'starting' || this.currentPhase === 'stopping') {
      this.log.warn({ phase: this.currentPhase }, 'reload ignored: the agent is not running yet or is stopping');
      return Promise.resolve('unchanged');
    }
    if (this.reloading) {
      // A SIGHUP during a reload may follow a second edit of the file: read it once more afterwards.
      this.reloadAgain = true;
      return this.reloading;
    }
    this.reloading = this.doReload().finally(() => {
      this.reloading = undefined;
      if (this.reloadAgain) {
        this.reloadAgain = false;
        void this.reload();
      }
    });
    return this.reloading;
  }

  private async doReload(): Promise<ReloadOutcome> {
    const { notifier, logs } = this.deps;
    this.currentPhase = 'reloading';
    notifier.reloading();
    let outcome: ReloadOutcome;
    try {
      outcome = await this.applyReload();
    } catch (err) {
      this.log.error({ err }, 'reload failed while applying; running configuration may be partly changed');
      outcome = 'invalid';
    }
    this.metrics.configReloads.inc({ result: outcome });
    // Whatever became of the file: an operator's SIGHUP also ends the sync's waits (a receiver back after an outage is tried at once).
    this.parts?.sync?.hurry('SIGHUP');
    if (this.currentPhase === 'reloading') this.currentPhase = 'running';
    notifier.ready(`Running (last reload: ${outcome.replace('_', ' ')}), log level ${logs.level}`);
    return outcome;
  }

  private async applyReload(): Promise<ReloadOutcome> {
    let next: Config;
    try {
      next = this.deps.reread().config;
    } catch (err) {
      if (err instanceof ConfigError) {
        this.log.error({ problems: err.problems, file: err.file }, 'reload refused: configuration invalid; keeping the running one');
        return 'invalid';
      }
      throw err;
    }
    const plan = planReload(this.config, next);
    if (plan.changed.length === 0) {
      this.log.info('reload: configuration unchanged');
      return 'unchanged';
    }
    if (plan.restartOnly.length > 0) {
      this.log.warn(
        { restartOnly: plan.restartOnly, changed: plan.changed },
        'reload refused: these keys only change with a restart; keeping the running configuration',
      );
      return 'restart_required';
    }
    this.deps.logs.setLevel(next.log.level);
    this.runner.setTimeouts({ startMs: next.lifecycle.startTimeoutMs, stopMs: next.lifecycle.stopTimeoutMs });
    await this.runner.reloadAll(next);
    this.config = next;
    this.log.info({ changed: plan.changed }, 'configuration reloaded');
    return 'applied';
  }
}
