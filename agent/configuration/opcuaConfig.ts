import type { ConfigurationConfig } from '../config/configurationSchema.js';
import type { EventBus } from '../events.js';
import type { Logger } from '../log.js';
import type { DeviceRepository } from '../store/deviceRepository.js';
import type { ConfigServer, OpcuaConfigSessions } from '../transport/opcuaConfigSession.js';
import type { ConfigDeliverer, ConfigStatus, ConfigurationHub, DeliveryOutcome, DesiredConfig } from './types.js';

export interface OpcuaConfigDeps {
  log: Logger;
  /** configuration.*: concurrency, opcuaDriftCheckSeconds. */
  config: () => ConfigurationConfig;
  devices: Pick<DeviceRepository, 'get'>;
  /**
   * Where and as whom a server is written (its endpoint, the certificate the
   * push verified on it, the push's credentials for it), or why it cannot be.
   */
  server: (deviceId: string) => ConfigServer | string;
  hub: ConfigurationHub;
  /** The sessions, over the agent's OPC UA client (set up on first use). */
  sessions: () => Promise<OpcuaConfigSessions>;
  /** Runs `work` holding the server's lock, the one the push and the technicians' actions hold: a write never meets a push's ApplyChanges. */
  locked: <T>(deviceId: string, work: () => Promise<T>) => Promise<T>;
  bus: EventBus;
  /** A device's configuration status now: drift checks read back only servers in_sync or drifted. */
  statusOf: (deviceId: string) => ConfigStatus | undefined;
}

const CHECKED: ReadonlySet<ConfigStatus | undefined> = new Set(['in_sync', 'drifted']);
const owner = 'opcua.config';

/**
 * Configuration delivery to provisioned OPC UA servers (protocol opcua):
 * each delivery writes over a session pinned to the certificate the push
 * left on the server, with the credentials the push uses, and answers
 * verified (read back equal) or failed. Drift checks read back the servers
 * that are in sync or drifted, every configuration.opcuaDriftCheckSeconds
 * and when a server that was offline is seen again (discovery marks it
 * online), and tell the hub what they read. Deliveries and checks share
 * configuration.concurrency; one server is never written and checked at
 * once.
 */
export class OpcuaConfigDeliverer implements ConfigDeliverer {
  readonly protocol = 'opcua' as const;
  private timer: NodeJS.Timeout | undefined;
  private intervalS = 0;
  private checking: Promise<void> | undefined;
  private stopped = false;
  private active = 0;
  private readonly queue: (() => void)[] = [];
  private readonly online = new Map<string, boolean>();
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly deps: OpcuaConfigDeps) {}

  /** Starts the drift checks (and listens for servers coming back). */
  start(): void {
    this.stopped = false;
    for (const d of this.deps.hub.current('opcua')) this.online.set(d.deviceId, this.deps.devices.get(d.deviceId)?.online ?? false);
    this.deps.bus.on('device.changed', owner, ({ deviceId }) => this.deviceChanged(deviceId));
    this.reschedule();
  }

  /** Follows a changed configuration.opcuaDriftCheckSeconds. */
  reschedule(): void {
    const seconds = this.deps.config().opcuaDriftCheckSeconds;
    if (this.timer && seconds === this.intervalS) return;
    clearInterval(this.timer);
    this.intervalS = seconds;
    this.timer = setInterval(() => void this.checkDrift(), seconds * 1000);
    this.timer.unref();
  }

  /** Stops checking; resolves once the deliveries and checks under way have ended (each bounded by its timeouts). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
    this.deps.bus.off(owner);
    await Promise.allSettled([...this.inFlight, this.checking]);
  }

  async deliver(desired: DesiredConfig, signal: AbortSignal): Promise<DeliveryOutcome> {
    try {
      const server = this.deps.server(desired.deviceId);
      if (typeof server === 'string') return { kind: 'failed', reason: server, retry: true };
      const sessions = await this.deps.sessions();
      return await this.bounded(desired.deviceId, signal, async () => {
        const outcome = await sessions.apply(server, desired);
        this.deps.log[outcome.kind === 'verified' ? 'info' : 'warn'](
          {
            device: desired.deviceId,
            profile: desired.profile,
            version: desired.version,
            outcome: outcome.kind,
            ...('reason' in outcome ? { reason: outcome.reason } : {}),
          },
          'OPC UA configuration delivered',
        );
        return outcome;
      });
    } catch (err) {
      return { kind: 'failed', reason: `the OPC UA client could not be used: ${(err as Error).message}`, retry: true };
    }
  }

  /** Nothing to take back: the values written stay on the server, as a technician left them. */
  async withdraw(device: { deviceId: string; name: string }): Promise<void> {
    this.deps.log.info({ device: device.deviceId }, 'OPC UA configuration withdrawn: the values written stay on the server');
  }

  /**
   * Reads back every server (or those of `only`) in sync or drifted and
   * online, and tells the hub what it read. A check under way covers a
   * second call for all servers; a server not reached is left as it was.
   */
  checkDrift(only?: readonly string[]): Promise<void> {
    if (!only && this.checking) return this.checking;
    const run = (async () => {
      const wanted = only ? new Set(only) : undefined;
      const due = this.deps.hub
        .current('opcua')
        .filter((d) => (!wanted || wanted.has(d.deviceId)) && CHECKED.has(this.deps.statusOf(d.deviceId)) && this.deps.devices.get(d.deviceId)?.online);
      if (due.length === 0) return;
      const sessions = await this.deps.sessions();
      await Promise.all(due.map((d) => this.checkOne(sessions, d)));
    })().catch((err: unknown) => this.deps.log.error({ err }, 'OPC UA drift check could not run'));
    if (!only) this.checking = run.finally(() => (this.checking = undefined));
    return run;
  }

  private async checkOne(sessions: OpcuaConfigSessions, desired: DesiredConfig): Promise<void> {
    const server = this.deps.server(desired.deviceId);
    if (typeof server === 'string') return this.deps.log.info({ device: desired.deviceId, reason: server }, 'OPC UA drift check skipped');
    const signal = new AbortController().signal;
    await this.bounded(desired.deviceId, signal, async () => {
      // A delivery may have run while this check waited: only a server still in sync or drifted is read back.
      if (this.stopped || !CHECKED.has(this.deps.statusOf(desired.deviceId))) return;
      const result = await sessions.observe(server, desired);
      if (result.kind === 'failed')
        return this.deps.log.info({ device: desired.deviceId, reason: result.reason }, 'OPC UA drift check could not read the server');
      if (!CHECKED.has(this.deps.statusOf(desired.deviceId))) return;
      const { differences } = result.observation;
      this.deps.log[differences.length ? 'warn' : 'debug'](
        { device: desired.deviceId, profile: desired.profile, version: desired.version, differences: differences.map((d) => d.key) },
        differences.length ? 'OPC UA configuration drifted' : 'OPC UA configuration as desired',
      );
      this.deps.hub.observed(desired.deviceId, result.observation);
    });
  }

  /** A server seen again after being offline is checked at once: it may have been reset or reconfigured while away. */
  private deviceChanged(deviceId: string): void {
    if (!deviceId.startsWith('opcua:') || this.stopped) return;
    const now = this.deps.devices.get(deviceId)?.online ?? false;
    const before = this.online.get(deviceId);
    this.online.set(deviceId, now);
    if (before === false && now) void this.checkDrift([deviceId]);
  }

  /** Runs `work` within configuration.concurrency, holding the server's lock. */
  private async bounded<T>(deviceId: string, signal: AbortSignal, work: () => Promise<T>): Promise<T | DeliveryOutcome> {
    while (this.active >= this.deps.config().concurrency) await new Promise<void>((r) => this.queue.push(r));
    this.active++;
    const running = (async () => {
      try {
        if (signal.aborted || this.stopped) return { kind: 'failed' as const, reason: 'the agent is stopping', retry: true };
        return await this.deps.locked(deviceId, work);
      } finally {
        this.active--;
        this.queue.shift()?.();
      }
    })();
    this.inFlight.add(running);
    return running.finally(() => this.inFlight.delete(running));
  }
}
