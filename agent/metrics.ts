import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { ServiceState } from './lifecycle/service.js';
import { AGENT_VERSION } from './version.js';

/**
 * The agent's Prometheus registry. One per App (not prom-client's global
 * registry) so that tests can run several agents in one process. Later parts
 * register their own metrics on `registry`.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly serviceUp: Gauge<'service'>;
  readonly configReloads: Counter<'result'>;
  readonly heartbeatTimestamp: Gauge;
  readonly uncleanShutdowns: Counter;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'edge_agent_' });
    new Gauge({
      name: 'edge_agent_build_info',
      help: 'Always 1; the labels tell which build runs',
      labelNames: ['version', 'node'],
      registers: [this.registry],
    }).set({ version: AGENT_VERSION, node: process.versions.node }, 1);
    this.serviceUp = new Gauge({
      name: 'edge_agent_service_up',
      help: '1 while the service is up, 0 otherwise',
      labelNames: ['service'],
      registers: [this.registry],
    });
    this.configReloads = new Counter({
      name: 'edge_agent_config_reloads_total',
      help: 'Configuration reloads (SIGHUP) by result: applied, unchanged, invalid, restart_required',
      labelNames: ['result'],
      registers: [this.registry],
    });
    this.heartbeatTimestamp = new Gauge({
      name: 'edge_agent_heartbeat_timestamp_seconds',
      help: 'Unix time of the last heartbeat written to the database',
      registers: [this.registry],
    });
    this.uncleanShutdowns = new Counter({
      name: 'edge_agent_unclean_shutdowns_detected_total',
      help: 'Earlier runs found at start that had not stopped cleanly (power cut, crash, kill -9)',
      registers: [this.registry],
    });
  }

  serviceState(name: string, state: ServiceState): void {
    this.serviceUp.set({ service: name }, state === 'up' ? 1 : 0);
  }
}
