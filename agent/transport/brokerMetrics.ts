import { Counter, Gauge, type Registry } from 'prom-client';
import type { ListenerName } from './brokerAcl.js';

/**
 * The embedded broker's metrics, on the agent's registry. A metric already
 * registered under the same name is reused, so that a broker rebuilt on the
 * same registry (a restart of the part) does not fail on a duplicate name.
 */
export class BrokerMetrics {
  readonly connectedClients: Gauge<'listener'>;
  /** Reasons: bad_client_id, client_id_in_use, not_authorized, tls, too_large. */
  readonly refusedConnections: Counter<'listener' | 'reason'>;
  /** Reasons: acl, not_authorized, too_large. */
  readonly refusedPublishes: Counter<'listener' | 'reason'>;
  /** Reason: acl. */
  readonly refusedSubscribes: Counter<'listener' | 'reason'>;

  constructor(registry: Registry) {
    const reuse = <T>(name: string, make: (name: string) => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make(name);
    const counter = (name: string, help: string) =>
      reuse(name, () => new Counter({ name, help, labelNames: ['listener', 'reason'] as const, registers: [registry] }));
    this.connectedClients = reuse(
      'edge_agent_broker_connected_clients',
      (name) => new Gauge({ name, help: 'MQTT clients connected to the embedded broker, by listener', labelNames: ['listener'], registers: [registry] }),
    );
    this.refusedConnections = counter(
      'edge_agent_broker_refused_connections_total',
      'Connections the embedded broker refused or cut, by listener and reason: bad_client_id, client_id_in_use, not_authorized, tls, too_large',
    );
    this.refusedPublishes = counter(
      'edge_agent_broker_refused_publishes_total',
      'PUBLISH packets the embedded broker refused (the client is then disconnected), by listener and reason: acl, not_authorized, too_large',
    );
    this.refusedSubscribes = counter(
      'edge_agent_broker_refused_subscribes_total',
      'Subscriptions the embedded broker refused (granted QoS 128), by listener and reason: acl',
    );
  }

  refused(kind: 'connection' | 'publish' | 'subscribe', listener: ListenerName | 'unknown', reason: string): void {
    const counter = kind === 'connection' ? this.refusedConnections : kind === 'publish' ? this.refusedPublishes : this.refusedSubscribes;
    counter.inc({ listener, reason });
  }
}
