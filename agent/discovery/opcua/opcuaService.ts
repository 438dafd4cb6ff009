import { join } from 'node:path';
import type { CaService } from '../../ca/caService.js';
import { ensureAgentClient } from '../../ca/localIdentity.js';
import type { Config } from '../../config/schema.js';
import type { EventBus } from '../../events.js';
import type { Service } from '../../lifecycle/service.js';
import type { Logger } from '../../log.js';
import { DeviceRepository } from '../../store/deviceRepository.js';
import { DiscoveryRunRepository } from '../../store/discoveryRunRepository.js';
import type { StoreService } from '../../store/storeService.js';
import { OpcuaProbe } from '../../transport/opcuaProbe.js';
import { OpcuaDiscovery } from './opcuaDiscovery.js';

export interface OpcuaServiceDeps {
  log: Logger;
  config: Config;
  storage: StoreService;
  ca: CaService;
  bus: EventBus;
}

/** How often runs requested from outside the daemon (the CLI) are looked for. */
const POLL_MS = 1_000;
/** Finished runs kept with their targets; older ones are deleted. */
const RUNS_KEPT = 100;

/**
 * OPC UA discovery inside the daemon: discovery runs requested at start, on
 * a schedule, or by a technician, one at a time, through the agent's OPC UA
 * client (an RSA agent-client certificate from the gateway CA; node-opcua's
 * PKI in <dataDir>/opcua/pki, never under the user's home), set up for the
 * first run.
 */
export class OpcuaService implements Service {
  readonly name = 'opcua';
  private config: Config;
  private probe: OpcuaProbe | undefined;
  private preparing: Promise<OpcuaDiscovery> | undefined;
  private runs: DiscoveryRunRepository | undefined;
  private poller: NodeJS.Timeout | undefined;
  private scheduler: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopping = false;
  private readonly abort = new AbortController();

  constructor(private readonly deps: OpcuaServiceDeps) {
    this.config = deps.config;
  }

  async start(): Promise<void> {
    this.runs = new DiscoveryRunRepository(this.deps.storage.store);
    if (this.config.opcua.runOnStart && this.runs.open('opcua').length === 0) this.runs.request('opcua', 'start', 'agent');
    this.schedule();
    this.poller = setInterval(() => void this.runOpen(), POLL_MS);
    void this.runOpen();
  }

  /**
   * The OPC UA client and its identity, made for the first run rather than at
   * start: loading node-opcua and making an RSA key take most of a second, and
   * a gateway that never discovers OPC UA servers should not pay for them.
   */
  private prepare(): Promise<OpcuaDiscovery> {
    this.preparing ??= (async () => {
      const { log, storage, ca } = this.deps;
      const identity = await ensureAgentClient(ca, this.config, log, 'opcua');
      this.probe = new OpcuaProbe({
        log: log.child({ part: 'client' }),
        pkiDir: join(this.config.agent.dataDir, 'opcua', 'pki'),
        applicationUri: identity.applicationUri,
        certificateFile: identity.certFile,
        privateKeyFile: identity.keyFile,
      });
      await this.probe.init();
      return new OpcuaDiscovery({
        log,
        config: () => this.config.opcua,
        probe: this.probe,
        runs: this.runs!,
        devices: new DeviceRepository(storage.store),
        store: storage.store,
        bus: this.deps.bus,
      });
    })();
    this.preparing.catch(() => (this.preparing = undefined));
    return this.preparing;
  }

  private schedule(): void {
    clearInterval(this.scheduler);
    this.scheduler = undefined;
    if (this.config.opcua.intervalMs > 0) {
      this.scheduler = setInterval(() => {
        // A run still waiting or running covers this one: runs do not pile up behind a long scan.
        if (this.runs && this.runs.open('opcua').length === 0) this.runs.request('opcua', 'interval', 'agent');
        void this.runOpen();
      }, this.config.opcua.intervalMs);
    }
  }

  /** Runs the requested discoveries one after the other; concurrent calls share one pass. */
  runOpen(): Promise<void> {
    this.running ??= (async () => {
      for (let run = this.runs?.open('opcua')[0]; run && !this.stopping; run = this.runs?.open('opcua')[0]) {
        let discovery: OpcuaDiscovery;
        try {
          discovery = await this.prepare();
        } catch (err) {
          // Without a client there is no run: it fails with the reason instead of waiting forever.
          this.runs!.finish(run.id, 'failed', `the OPC UA client could not be set up: ${(err as Error).message}`);
          throw err;
        }
        await discovery.run(run, this.abort.signal);
        this.runs?.prune('opcua', RUNS_KEPT);
      }
    })()
      .catch((err: unknown) => this.deps.log.error({ err }, 'OPC UA discovery could not run'))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  reload(config: Config): void {
    this.config = config;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    clearInterval(this.poller);
    clearInterval(this.scheduler);
    // Aborted, a run starts no new target and goes back to `requested`; the probes in flight end within their timeout.
    // Waiting is capped so the agent's stop stays within its timeouts; a probe still in flight then fails and is not recorded.
    await Promise.race([this.running, new Promise((r) => setTimeout(r, Math.min(this.config.opcua.timeoutMs, 3_000)))]);
    await this.probe?.dispose();
  }
}
