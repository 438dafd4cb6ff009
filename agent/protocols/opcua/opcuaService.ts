import type { ConfigurationHub } from '../../configuration/types.js';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import type { CaService } from '../../ca/caService.js';
import { ensureAgentClient } from '../../ca/localIdentity.js';
import type { Config } from '../../config/schema.js';
import type { EventBus } from '../../events.js';
import type { Service } from '../../lifecycle/service.js';
import type { Logger } from '../../log.js';
import { DeviceLocks } from '../../onboarding/deviceLocks.js';
import { OpcuaActions } from '../../onboarding/opcuaActions.js';
import { sweepCrls } from '../../onboarding/opcuaCrl.js';
import { OpcuaPush } from '../../onboarding/opcuaPush.js';
import type { Store } from '../../store/database.js';
import type { DiscoveryRunRepository } from '../../store/discoveryRunRepository.js';
import type { PushRepository } from '../../store/pushRepository.js';
import type { Repositories } from '../../store/repositories.js';
import { OpcuaProbe } from '../../transport/opcuaProbe.js';
import { OpcuaPushSessions } from '../../transport/opcuaPushSession.js';
import { OpcuaDiscovery } from '../../discovery/opcua/opcuaDiscovery.js';
import { defaultConfigurationConfig, type ConfigurationConfig } from '../../config/configurationSchema.js';
import { OpcuaConfigDeliverer } from '../../configuration/opcuaConfig.js';
import { OpcuaConfigSessions, type ConfigServer } from '../../transport/opcuaConfigSession.js';
import { opcuaSource, securityAdminFor } from '../../onboarding/opcuaPolicy.js';

export interface OpcuaServiceDeps {
  log: Logger;
  config: Config['opcua'];
  /** The gateway's id and data directory (restart-only: fixed for the service's life). */
  agent: { id: string; dataDir: string };
  /** ca.organization, the O= of the certificates pushed (restart-only). */
  organization: string;
  store: Store;
  repos: Pick<Repositories, 'devices' | 'actions' | 'discoveryRuns' | 'pushes' | 'configs'>;
  ca: CaService;
  bus: EventBus;
  configuration?: ConfigurationHub;
  /** configuration.* (concurrency, opcuaDriftCheckSeconds) for the configuration deliverer; defaults when absent. */
  configurationConfig?: ConfigurationConfig;
}

/**
 * How often runs and decisions requested from outside the daemon (the CLI),
 * and pushes due, are looked for (the API's decisions come at once, on action.queued).
 */
const POLL_MS = 1_000;
/** Finished runs kept with their targets; older ones are deleted. */
const RUNS_KEPT = 100;

/**
 * OPC UA inside the daemon: discovery runs requested at start, on a
 * schedule, or by a technician, one at a time; approvals (the
 * opcua.push.approve rules after each run, technicians' decisions); and
 * push provisioning of approved servers, with retries and renewals. All go
 * through the agent's OPC UA client (an RSA agent-client certificate from
 * the gateway CA; node-opcua's PKI in <dataDir>/opcua/pki, never under the
 * user's home), set up when first needed.
 */
export class OpcuaService implements Service {
  readonly name = 'opcua';
  private config: Config['opcua'];
  private probe: OpcuaProbe | undefined;
  private preparing: Promise<{ discovery: OpcuaDiscovery; push: OpcuaPush; config: OpcuaConfigSessions }> | undefined;
  private readonly runs: DiscoveryRunRepository;
  private readonly pushes: PushRepository;
  private readonly actions: OpcuaActions;
  private readonly locks = new DeviceLocks();
  private push: OpcuaPush | undefined;
  private poller: NodeJS.Timeout | undefined;
  private scheduler: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopping = false;
  private readonly abort = new AbortController();
  private configurationConfig: ConfigurationConfig;
  private configDeliverer: OpcuaConfigDeliverer | undefined;

  constructor(private readonly deps: OpcuaServiceDeps) {
    this.config = deps.config;
    this.configurationConfig = deps.configurationConfig ?? defaultConfigurationConfig();
    this.runs = deps.repos.discoveryRuns;
    this.pushes = deps.repos.pushes;
    this.actions = new OpcuaActions({
      log: deps.log.child({ part: 'actions' }),
      config: () => this.config.push,
      store: deps.store,
      actions: deps.repos.actions,
      devices: deps.repos.devices,
      pushes: deps.repos.pushes,
      ca: deps.ca,
      locks: this.locks,
      bus: deps.bus,
    });
  }

  async start(): Promise<void> {
    // A decision the API committed is carried out at once (POLL_MS stays for the CLI's --local);
    // one more pass, as the one under way may have read the queue before it.
    this.deps.bus.on('action.queued', this.name, ({ deviceId }) =>
      deviceId.startsWith('opcua:')
        ? this.actions
            .runOpen()
            .then(() => this.actions.runOpen())
            .then(() => this.runPushes())
        : undefined,
    );
    await this.actions.runOpen();
    if (this.config.runOnStart && this.runs.open('opcua').length === 0) this.runs.request('opcua', 'start', 'agent');
    this.schedule();
    this.poller = setInterval(() => this.tick(), POLL_MS);
    this.tick();
    this.startConfiguration();
  }

  /** Configuration delivery (docs/device-configuration.md): the deliverer of protocol opcua, registered with the hub while the service runs. */
  private startConfiguration(): void {
    const hub = this.deps.configuration;
    if (!hub) return;
    this.configDeliverer = new OpcuaConfigDeliverer({
      log: this.deps.log.child({ part: 'config' }),
      config: () => this.configurationConfig,
      devices: this.deps.repos.devices,
      server: (deviceId) => this.configServer(deviceId),
      hub,
      sessions: async () => (await this.prepare()).config,
      locked: (deviceId, work) => this.locks.run(deviceId, work),
      bus: this.deps.bus,
      statusOf: (deviceId) => this.deps.repos.configs.get(deviceId)?.status,
    });
    this.configDeliverer.start();
    hub.register(this.configDeliverer);
  }

  /** A provisioned server as configuration reaches it: its endpoint, the certificate the push verified on it, the push's credentials; or why not. */
  private configServer(deviceId: string): ConfigServer | string {
    const device = this.deps.repos.devices.get(deviceId);
    if (!device) return `${deviceId} is not in the inventory`;
    if (device.state !== 'provisioned') return `${deviceId} is ${device.state}, not provisioned`;
    const source = opcuaSource(device);
    if (!source) return 'discovery recorded no endpoint for this server';
    const record = device.certificateSerial ? this.deps.ca.certificate(device.certificateSerial)?.record : undefined;
    if (!record) return 'no certificate from the gateway CA is on record for this server: it is written once the push has verified one';
    if (record.status === 'revoked') return `the server's certificate ${record.serial} is revoked: nothing is sent to it`;
    const user = securityAdminFor(this.config.push, source.applicationUri);
    if (typeof user === 'string') return user;
    return { url: source.endpointUrl, certificate: new X509Certificate(record.pem).raw, user, timeoutMs: this.config.push.stepTimeoutMs };
  }

  /** One look at everything waiting: discovery runs, technicians' decisions, approvals by policy, pushes due. */
  private tick(): void {
    void this.runOpen();
    void this.actions.runOpen().then(() => this.runPushes());
  }

  /**
   * Approves what the rules approve, then starts the pushes due in the free
   * slots (each finished push starts the next). Pushes start as servers are
   * approved, not in batches.
   */
  async runPushes(): Promise<void> {
    if (this.stopping || !this.config.push.enabled) return;
    try {
      // A revocation since a server got its CRLs: the new ones are pushed to it, or it is said that they cannot be.
      sweepCrls({ store: this.deps.store, pushes: this.pushes, log: this.deps.log }, () => {
        const trust = this.deps.ca.opcuaTrust();
        return [...trust.trustedCrls, ...trust.issuerCrls];
      });
      this.actions.approveByPolicy();
      if (!this.push && this.pushes.due(new Date(), 1).length === 0) return;
      this.push ??= (await this.prepare()).push;
      this.push.kick(this.abort.signal);
    } catch (err) {
      this.deps.log.error({ err }, 'OPC UA push provisioning could not run');
    }
  }

  /**
   * The OPC UA client and its identity, made for the first run rather than at
   * start: loading node-opcua and making an RSA key take most of a second, and
   * a gateway that never discovers OPC UA servers should not pay for them.
   */
  private prepare(): Promise<{ discovery: OpcuaDiscovery; push: OpcuaPush; config: OpcuaConfigSessions }> {
    this.preparing ??= (async () => {
      const { log, store, ca } = this.deps;
      const identity = await ensureAgentClient(ca, { agent: this.deps.agent }, log, 'opcua');
      this.probe = new OpcuaProbe({
        log: log.child({ part: 'client' }),
        pkiDir: join(this.deps.agent.dataDir, 'opcua', 'pki'),
        applicationUri: identity.applicationUri,
        certificateFile: identity.certFile,
        privateKeyFile: identity.keyFile,
        // Only an all-RSA chain: node-opcua verifies no ECDSA signature and fails on one.
        ...(ca.opcuaChain() ? { caCertificates: ca.opcuaChain()!, crls: ca.crlDers() } : {}),
      });
      await this.probe.init();
      const { devices } = this.deps.repos;
      const discovery = new OpcuaDiscovery({ log, config: () => this.config, probe: this.probe, runs: this.runs, devices, store, bus: this.deps.bus });
      const sessions = new OpcuaPushSessions(this.probe, log.child({ part: 'push' }));
      const push = new OpcuaPush({
        log: log.child({ part: 'push' }),
        config: () => this.config,
        organization: () => this.deps.organization,
        store,
        devices,
        pushes: this.pushes,
        ca,
        sessions,
        locks: this.locks,
        bus: this.deps.bus,
      });
      const config = new OpcuaConfigSessions(this.probe, sessions, log.child({ part: 'config' }));
      return { discovery, push, config };
    })();
    this.preparing.catch(() => (this.preparing = undefined));
    return this.preparing;
  }

  private schedule(): void {
    clearInterval(this.scheduler);
    this.scheduler = undefined;
    if (this.config.intervalMs > 0) {
      this.scheduler = setInterval(() => {
        // A run still waiting or running covers this one: runs do not pile up behind a long scan.
        if (this.runs.open('opcua').length === 0) this.runs.request('opcua', 'interval', 'agent');
        void this.runOpen();
      }, this.config.intervalMs);
    }
  }

  /** Runs the requested discoveries one after the other; concurrent calls share one pass. */
  runOpen(): Promise<void> {
    this.running ??= (async () => {
      for (let run = this.runs.open('opcua')[0]; run && !this.stopping; run = this.runs.open('opcua')[0]) {
        let discovery: OpcuaDiscovery;
        try {
          ({ discovery } = await this.prepare());
        } catch (err) {
          // Without a client there is no run: it fails with the reason instead of waiting forever.
          this.runs.finish(run.id, 'failed', `the OPC UA client could not be set up: ${(err as Error).message}`);
          throw err;
        }
        await discovery.run(run, this.abort.signal);
        this.runs.prune('opcua', RUNS_KEPT);
        // Servers found by this run that a rule approves are pushed to at once.
        void this.runPushes();
      }
    })()
      .catch((err: unknown) => this.deps.log.error({ err }, 'OPC UA discovery could not run'))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  /** Takes its slice of a reloaded configuration (opcua). */
  reload(config: Config): void {
    this.config = config.opcua;
    this.schedule();
    this.configurationConfig = config.configuration;
    this.configDeliverer?.reschedule();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.configDeliverer) this.deps.configuration?.unregister('opcua');
    this.deps.bus.off(this.name);
    this.abort.abort();
    clearInterval(this.poller);
    clearInterval(this.scheduler);
    // Aborted, a run starts no new target and goes back to `requested`; the probes in flight end within their timeout.
    // Waiting is capped so the agent's stop stays within its timeouts; a probe still in flight then fails and is not recorded.
    // A push cut off here is resumed at the next start from what the server presents.
    await Promise.race([
      Promise.all([this.running, this.push?.idle(), this.configDeliverer?.stop()]),
      new Promise((r) => setTimeout(r, Math.min(this.config.timeoutMs, 3_000))),
    ]);
    await this.probe?.dispose();
  }
}
