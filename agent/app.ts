import { CaService } from './ca/caService.js';
import { EventBus } from './events.js';
import { registerHealthRoutes, type HealthSource } from './api/health.js';
import { HttpService } from './api/httpServer.js';
import { apiUrl, listenerTls } from './api/listener.js';
import { planReload } from './config/diff.js';
import type { LoadedConfig } from './config/load.js';
import type { Config } from './config/schema.js';
import { ConfigError, describeError } from './errors.js';
import { ServiceRunner, type ServiceStatus } from './lifecycle/runner.js';
import { InstanceLock } from './lifecycle/instanceLock.js';
import { RunRecorder } from './runs/runRecorder.js';
import type { SystemdNotifier } from './lifecycle/sdNotify.js';
import type { LogHub, Logger } from './log.js';
import { Metrics } from './metrics.js';
import { MqttService } from './protocols/mqtt/mqttService.js';
import { OpcuaService } from './protocols/opcua/opcuaService.js';
import { SyncService } from './sync/syncService.js';
import { Api } from './api/apiRoutes.js';
import { RunsRepository } from './store/runsRepository.js';
import { StoreService } from './store/storeService.js';
import { AGENT_VERSION } from './version.js';

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

/**
 * The composition root: the one place that constructs the agent's services,
 * in start order, and owns start, stop and reload. Constructing does no I/O.
 */
export class App implements HealthSource {
  readonly metrics = new Metrics();
  readonly http: HttpService;
  readonly bus: EventBus;
  readonly ca: CaService;
  readonly mqtt: MqttService | undefined;
  readonly opcua: OpcuaService | undefined;
  private readonly sync: SyncService | undefined;
  private readonly runner: ServiceRunner;
  private readonly api: Api;
  private readonly runs: RunRecorder;
  private readonly log: Logger;
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
    const storage = new StoreService({ log: logs.child('store'), options: c.store });
    this.runs = new RunRecorder({
      log: logs.child('runs'),
      runLog: () => new RunsRepository(storage.store),
      metrics: this.metrics,
      heartbeatIntervalMs: c.agent.heartbeatIntervalMs,
    });
    const httpLog = logs.child('http');
    // Called at http start, which comes after the CA's.
    const tls = c.http.tls.enabled ? () => listenerTls(this.ca, c, httpLog) : undefined;
    const { host, port, names, maxConnections, headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs } = c.http;
    this.http = new HttpService({
      log: httpLog,
      host,
      port,
      names,
      limits: { maxConnections, headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs },
      tls,
      ciphers: c.http.tls.ciphers,
      registry: this.metrics.registry,
    });
    registerHealthRoutes(this.http, { source: this, metrics: this.metrics });
    this.bus = new EventBus(logs.child('events'));
    this.ca = new CaService({
      log: logs.child('ca'),
      config: c.ca,
      gatewayId: c.agent.id,
      storage,
      http: this.http,
      metrics: this.metrics,
      bus: this.bus,
      env: deps.env ?? process.env,
    });
    this.api = new Api(this.http, { log: logs.child('api'), config: () => this.config, store: () => storage.store, bus: this.bus, ca: this.ca, registry: this.metrics.registry });
    this.mqtt = c.mqtt.enabled
      ? new MqttService({ log: logs.child('mqtt'), config: c, storage, ca: this.ca, metrics: this.metrics, bus: this.bus })
      : undefined;
    this.opcua = c.opcua.enabled ? new OpcuaService({ log: logs.child('opcua'), config: c, storage, ca: this.ca, bus: this.bus }) : undefined;
    const sync = c.sync.enabled ? new SyncService({ log: logs.child('sync'), config: c, storage, ca: this.ca, metrics: this.metrics, bus: this.bus }) : undefined;
    this.sync = sync;
    this.runner = new ServiceRunner({
      log: logs.child('lifecycle'),
      services: [lock, storage, this.runs, this.ca, ...(this.mqtt ? [this.mqtt] : []), ...(this.opcua ? [this.opcua] : []), ...(sync ? [sync] : []), this.http],
      timeouts: { startMs: c.lifecycle.startTimeoutMs, stopMs: c.lifecycle.stopTimeoutMs },
      onStateChange: (name, state) => {
        this.metrics.serviceState(name, state);
        if (state === 'starting') deps.notifier.status(`Starting ${name}`);
      },
    });
  }

  phase(): ReturnType<HealthSource['phase']> {
    return this.currentPhase;
  }

  services(): ServiceStatus[] {
    return this.runner.states();
  }

  get runningConfig(): Config {
    return this.config;
  }

  /** Starts every service; READY=1 only once all are up. Throws (after stopping what started) if one fails. */
  async start(signal: AbortSignal): Promise<void> {
    const { notifier } = this.deps;
    this.log.info(
      { version: AGENT_VERSION, node: process.version, config: this.deps.loaded.file, dataDir: this.config.agent.dataDir },
      'edge-agent starting',
    );
    notifier.startWatchdog(() => this.runs.healthy());
    try {
      await this.runner.startAll(signal);
    } catch (err) {
      notifier.status(`Failed to start: ${describeError(err)}`);
      throw err;
    }
    try {
      this.api.bootstrap();
    } catch (err) {
      // Not fatal: an administrator can still make users and tokens with the CLI.
      this.log.error({ err }, 'the first admin token could not be made; use edge-agent users add / tokens create');
    }
    this.currentPhase = 'running';
    const { address, port } = this.http.address();
    try {
      const url = apiUrl(this.config);
      this.api.published(this.config.http.port === 0 ? url.replace(/:0$/, `:${port}`) : url);
    } catch (err) {
      this.log.warn({ err }, 'the API address could not be written for the CLI (<dataDir>/api.url)');
    }
    notifier.ready(`Running: ${this.runner.states().length} services up, http on ${address}:${port}`);
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
    this.sync?.hurry('SIGHUP');
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
