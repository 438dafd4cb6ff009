import type { ConfigurationHub } from '../../configuration/types.js';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Gauge } from 'prom-client';
import { writeFileAtomic } from '../../../certs/keys/fileKey.js';
import type { CaService } from '../../ca/caService.js';
import { ensureAgentClient, ensureLocalIdentity, opcuaClientId, type LocalIdentity } from '../../ca/localIdentity.js';
import type { Config } from '../../config/schema.js';
import { ConfigFileError } from '../../errors.js';
import { MqttDiscovery } from '../../discovery/mqttDiscovery.js';
import { MqttDiscoveryRuns } from '../../discovery/mqttDiscoveryRun.js';
import type { EventBus } from '../../events.js';
import type { Service } from '../../lifecycle/service.js';
import type { Logger } from '../../log.js';
import type { Metrics } from '../../metrics.js';
import type { Store } from '../../store/database.js';
import type { DeviceRepository } from '../../store/deviceRepository.js';
import type { Repositories } from '../../store/repositories.js';
import { EmbeddedBroker } from '../../transport/embeddedBroker.js';
import { ExternalBroker } from '../../transport/externalBroker.js';
import { MosquittoGate } from '../../transport/mosquittoGate.js';
import type { AccessGate, BrokerLink, DeviceAccess } from '../../transport/types.js';
import { loadManufacturerCas } from '../../onboarding/claim.js';
import { DeviceActions } from '../../onboarding/deviceActions.js';
import { MqttEnrollment } from '../../onboarding/mqttEnrollment.js';
import { EnrollmentPolicy } from '../../onboarding/policy.js';
import { MqttConfig } from '../../configuration/mqttConfig.js';
import { configRootProblem } from '../../transport/brokerAcl.js';
import type { EnrollmentWitness } from '../../onboarding/enrollmentWitness.js';
import type { BrokerWitness } from '../../transport/brokerWitness.js';

/**
 * The agent's client id on an external broker: random, kept in the data
 * directory, so that no other client can predict it and take its session
 * over (Mosquitto client ids are global across listeners).
 */
function clientId(dir: string, agentId: string): string {
  const file = join(dir, 'client-id');
  if (existsSync(file)) {
    const kept = readFileSync(file, 'utf8').trim();
    if (/^[A-Za-z0-9._-]{1,128}$/.test(kept)) return kept;
  }
  const id = `edge-agent-${agentId}-${randomBytes(8).toString('hex')}`;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(file, `${id}\n`, 0o600);
  return id;
}

export interface MqttServiceDeps {
  log: Logger;
  config: Config['mqtt'];
  /** The gateway's id and data directory (restart-only: fixed for the service's life). */
  agent: { id: string; dataDir: string };
  /** ca.crlFile, which an external Mosquitto is handed (restart-only). */
  crlFile: string;
  store: Store;
  repos: Pick<Repositories, 'devices' | 'enrollments' | 'actions' | 'discoveryRuns'>;
  ca: CaService;
  metrics: Metrics;
  bus: EventBus;
  /** Configuration delivery to MQTT devices: registered with this hub while the broker runs (absent: none). */
  configuration?: ConfigurationHub;
  /** configuration.topicRoot (default `config`; restart-only: the broker ACLs are built with it). */
  configurationTopicRoot?: string;
  /** The device report's sightings: clients, announcements, certificates and requests no identity explains. */
  sightings?: BrokerWitness & EnrollmentWitness;
}

/**
 * MQTT onboarding and discovery: the broker (embedded, or the link to an
 * external Mosquitto), the enrollment protocol, announcements, and the
 * technicians' decisions. Stops in reverse: no new work, drain, then the
 * broker.
 */
export class MqttService implements Service, DeviceAccess {
  readonly name = 'mqtt';
  private config: Config['mqtt'];
  private policy: EnrollmentPolicy | undefined;
  private broker: (BrokerLink & Service) | undefined;
  private embedded: EmbeddedBroker | undefined;
  private mosquitto: MosquittoGate | undefined;
  private enrollment: MqttEnrollment | undefined;
  private configDelivery: MqttConfig | undefined;
  private actions: DeviceActions | undefined;
  private timer: NodeJS.Timeout | undefined;
  private discoveryRuns: MqttDiscoveryRuns | undefined;
  private runningDiscovery: Promise<void> | undefined;
  private readonly abort = new AbortController();
  /** The mutual-TLS URL devices are told when mqtt.deviceBrokerUrl is empty. */
  private deviceUrl = '';

  constructor(private readonly deps: MqttServiceDeps) {
    this.config = deps.config;
    const self = this;
    new Gauge({
      name: 'edge_agent_devices',
      help: 'Devices in the inventory, by state',
      labelNames: ['state'],
      registers: [deps.metrics.registry],
      collect() {
        for (const [state, n] of Object.entries(self.deps.repos.devices.countByState())) this.set({ state }, n);
      },
    });
  }

  /**
   * Where a device or commissioning app connects: the provisioning listener (with an enrollment token)
   * and the mutual-TLS one (with its certificate). Empty until the broker has started.
   */
  endpoints(): { url: string; purpose: 'provisioning' | 'mutual-tls' }[] {
    const c = this.config;
    if (this.embedded && this.deviceUrl) {
      const host = new URL(this.deviceUrl).host.replace(/:\d+$/, '');
      const provisioning = `${c.provisioningTls ? 'mqtts' : 'mqtt'}://${host}:${this.embedded.addresses().provisioning}`;
      return [
        { url: provisioning, purpose: 'provisioning' },
        { url: c.deviceBrokerUrl || this.deviceUrl, purpose: 'mutual-tls' },
      ];
    }
    if (!this.broker) return [];
    return [
      { url: c.brokerUrl, purpose: 'provisioning' },
      ...(c.deviceBrokerUrl ? [{ url: c.deviceBrokerUrl, purpose: 'mutual-tls' as const }] : [{ url: c.brokerUrl, purpose: 'mutual-tls' as const }]),
    ];
  }

  get running(): { enrollment: MqttEnrollment; actions: DeviceActions; devices: DeviceRepository; embedded?: EmbeddedBroker } {
    return { enrollment: this.enrollment!, actions: this.actions!, devices: this.deps.repos.devices, ...(this.embedded ? { embedded: this.embedded } : {}) };
  }

  async start(): Promise<void> {
    const { log, store, ca, metrics } = this.deps;
    const { devices, enrollments } = this.deps.repos;
    this.policy = this.buildPolicy(this.config);
    const c = this.config;
    const agentId = this.deps.agent.id;
    const stateDir = join(this.deps.agent.dataDir, 'mqtt');
    const configRoot = this.deps.configurationTopicRoot ?? 'config';
    const clash = configRootProblem(configRoot, c.topicPrefix);
    if (clash) throw new ConfigFileError(clash);
    let gate: AccessGate;
    if (c.brokerUrl !== '') {
      const identity = await ensureAgentClient(ca, { agent: this.deps.agent }, log, 'mqtt');
      const external = new ExternalBroker({ log: log.child({ part: 'link' }), url: c.brokerUrl, clientId: clientId(stateDir, agentId), tls: () => identity });
      this.broker = external;
      const mosquitto = (this.mosquitto = new MosquittoGate({
        log: log.child({ part: 'mosquitto' }),
        metrics,
        options: () => ({
          dir: this.config.mosquittoDir,
          pidFile: this.config.mosquittoPidFile,
          reloadCommand: this.config.mosquittoReloadCommand,
          agentId,
          topicPrefix: this.config.topicPrefix,
          crlFile: this.deps.crlFile,
          configTopicRoot: configRoot,
        }),
        // From the certificates, not the inventory state: what the CRL would refuse, and decommissioned devices.
        cutOffIdentities: () => [
          ...new Set([...ca.revokedIdentities('mqtt-device'), ...devices.list({ state: 'decommissioned', protocol: 'mqtt' }).map((d) => d.name)]),
        ],
        takeOver: (id) => external.takeOver(id),
      }));
      await mosquitto.sync().catch(() => undefined);
      gate = mosquitto;
      this.deviceUrl = c.brokerUrl;
    } else {
      const identity = await this.brokerIdentity(stateDir);
      const embedded = (this.embedded = new EmbeddedBroker({
        log: log.child({ part: 'broker' }),
        metrics,
        options: {
          host: c.listenHost,
          provisioningPort: c.provisioningPort,
          provisioningTls: c.provisioningTls,
          mtlsPort: c.mtlsPort,
          topicPrefix: c.topicPrefix,
          maxPayloadBytes: c.maxPayloadBytes,
          configTopicRoot: configRoot,
        },
        tls: () => identity,
        access: this,
        ...(this.deps.sightings ? { witness: this.deps.sightings } : {}),
        presence: (identity, online) => {
          try {
            const device = devices.byName('mqtt', identity);
            if (device) devices.touch(device.id, online);
          } catch (err) {
            log.warn({ err, identity, online }, 'device presence could not be recorded');
          }
        },
      }));
      this.broker = embedded;
      gate = { cutOff: async (id) => void embedded.disconnectIdentity(id), restore: async () => undefined };
    }
    await this.broker.start(new AbortController().signal);
    if (this.embedded) {
      const host = c.listenHost === '0.0.0.0' || c.listenHost === '::' ? hostname() : c.listenHost;
      this.deviceUrl = `mqtts://${isIP(host) === 6 ? `[${host}]` : host}:${this.embedded.addresses().mtls}`;
    }
    const enrollment = (this.enrollment = new MqttEnrollment({
      log: log.child({ part: 'enrollment' }),
      metrics,
      config: () => this.config,
      store,
      devices,
      enrollments,
      policy: () => this.policy!,
      ca,
      link: this.broker,
      gate,
      brokerUrl: () => this.config.deviceBrokerUrl || this.deviceUrl,
      reservedIds: () => [agentId, opcuaClientId(agentId)],
      ...(this.deps.sightings ? { witness: this.deps.sightings } : {}),
    }));
    const discovery = new MqttDiscovery({
      log: log.child({ part: 'discovery' }),
      metrics,
      config: () => this.config,
      store,
      devices,
    });
    await this.broker.subscribe(enrollment.filters(), (m) => enrollment.receive(m));
    await this.broker.subscribe(discovery.filters(), (m) => void discovery.receive(m));
    this.discoveryRuns = new MqttDiscoveryRuns({
      log: log.child({ part: 'discovery' }),
      runs: this.deps.repos.discoveryRuns,
      discovery,
      link: this.broker,
      bus: this.deps.bus,
    });
    await enrollment.resume();
    this.actions = new DeviceActions({
      log: log.child({ part: 'actions' }),
      store,
      actions: this.deps.repos.actions,
      devices,
      enrollments,
      ca,
      enrollment,
      gate,
      bus: this.deps.bus,
    });
    // A decision the API committed is carried out at once; the pass under way may have read the queue before it, hence one more.
    this.deps.bus.on('action.queued', this.name, ({ deviceId }) =>
      deviceId.startsWith('mqtt:') ? this.actions?.runOpen().then(() => this.actions?.runOpen()) : undefined,
    );
    await this.actions.runOpen();
    if (this.deps.configuration) {
      this.configDelivery = new MqttConfig({
        log: log.child({ part: 'configuration' }),
        link: this.broker,
        hub: this.deps.configuration,
        topicRoot: configRoot,
      });
      await this.configDelivery.start();
    }
    this.schedule();
  }

  /** The fallback: decisions the CLI queued with --local (another process, no event), discovery runs requested, the CRL. */
  private schedule(): void {
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      void this.actions?.runOpen();
      void this.runDiscoveries();
      // A CRL changed outside a device decision (ca revoke, the CA's reissue before nextUpdate) reaches Mosquitto too.
      void this.mosquitto?.refresh();
    }, this.config.actionPollMs);
  }

  /** Runs the MQTT discovery runs requested (by a technician), one at a time. */
  private runDiscoveries(): Promise<void> {
    this.runningDiscovery ??= (async () => {
      const runs = this.deps.repos.discoveryRuns;
      for (let run = runs.open('mqtt')[0]; run && this.discoveryRuns && !this.abort.signal.aborted; run = runs.open('mqtt')[0]) {
        await this.discoveryRuns.run(run, this.abort.signal);
      }
    })()
      .catch((err: unknown) => this.deps.log.error({ err }, 'MQTT discovery could not run'))
      .finally(() => (this.runningDiscovery = undefined));
    return this.runningDiscovery;
  }

  private buildPolicy(config: Config['mqtt']): EnrollmentPolicy {
    const load = (file: string) => {
      try {
        return loadManufacturerCas(file);
      } catch (err) {
        const index = config.policy.rules.findIndex((r) => r.kind === 'claim' && r.manufacturerCaFile === file);
        throw new ConfigFileError(`mqtt.policy.rules.${index}.manufacturerCaFile: ${(err as Error).message}`, { cause: err });
      }
    };
    return new EnrollmentPolicy(config.policy, load, (secret) => this.deps.repos.enrollments.tokenBySecret(secret));
  }

  private async brokerIdentity(dir: string): Promise<LocalIdentity> {
    const host = this.config.listenHost;
    const ips = ['127.0.0.1'];
    if (isIP(host) && host !== '0.0.0.0' && host !== '::' && host !== '127.0.0.1') ips.push(host);
    const dnsNames = [...new Set(['localhost', hostname().toLowerCase()])].filter((n) => /^[a-z0-9.-]{1,253}$/.test(n));
    if (!isIP(host) && /^[a-z0-9.-]{1,253}$/i.test(host)) dnsNames.push(host.toLowerCase());
    // The name devices are told (mqtt.deviceBrokerUrl) must be one they can verify.
    const told = this.config.deviceBrokerUrl === '' ? '' : new URL(this.config.deviceBrokerUrl).hostname.replace(/^\[|\]$/g, '');
    if (told !== '' && isIP(told)) ips.push(told);
    else if (/^[a-z0-9.-]{1,253}$/i.test(told)) dnsNames.push(told.toLowerCase());
    return ensureLocalIdentity(
      this.deps.ca,
      {
        profile: 'broker-server',
        identity: this.deps.agent.id,
        dnsNames: [...new Set(dnsNames)],
        ipAddresses: [...new Set(ips)],
        dir,
        basename: 'broker-server',
      },
      this.deps.log,
    );
  }

  /**
   * The embedded broker asks this on every mutual-TLS connection and
   * delivery. Access follows the certificate, as on Mosquitto: a technician
   * rejecting a (possibly spoofed) renewal does not lock the device out.
   */
  allowed(identity: string, serial: string): boolean {
    const cert = this.deps.ca.certificate(serial);
    if (cert?.record.status !== 'valid' || cert.record.identity !== identity || cert.record.profile !== 'mqtt-device') return false;
    const device = this.deps.repos.devices.byName('mqtt', identity);
    return device !== undefined && device.state !== 'revoked' && device.state !== 'decommissioned';
  }

  /** Takes its slice of a reloaded configuration (mqtt). */
  reload(config: Config): void {
    const policy = this.buildPolicy(config.mqtt);
    this.config = config.mqtt;
    this.policy = policy;
    this.enrollment?.reconfigure();
    this.schedule();
  }

  async stop(): Promise<void> {
    this.deps.bus.off(this.name);
    clearInterval(this.timer);
    this.timer = undefined;
    this.abort.abort();
    this.configDelivery?.stop();
    this.configDelivery = undefined;
    await this.runningDiscovery;
    if (this.enrollment) await Promise.race([this.enrollment.drained(), new Promise((r) => setTimeout(r, 2_000))]);
    await this.broker?.stop();
    this.broker = undefined;
    this.embedded = undefined;
    this.mosquitto = undefined;
  }
}
