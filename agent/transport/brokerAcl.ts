/** The two listeners of the embedded broker. */
export type ListenerName = 'provisioning' | 'mtls';

/**
 * What a client of the embedded broker may publish, subscribe to and receive,
 * mirroring the ACL files written for an external Mosquitto
 * (agent/broker/mosquittoConfig.ts). `id` is the client id on the
 * provisioning listener and the certificate's CN on the mutual-TLS listener;
 * the broker checks it against DEVICE_ID_PATTERN first, so it never holds a
 * `/`, `+` or `#` and can be compared as one topic level.
 *
 * - provisioning: publish `${prefix}/${id}/request`, subscribe `${prefix}/${id}/response`, exactly.
 * - mtls: publish `devices/${id}` and below, Sparkplug B messages of edge node
 *   `id` (`spBv1.0/+/+/${id}` and below), `homie/${id}/...`,
 *   `homeassistant/+/${id}/...`, its own request and its own configuration
 *   report `${configRoot}/${id}/reported`; subscribe `devices/${id}` and below
 *   (wildcards only below `id`), its own response and its own desired
 *   configuration `${configRoot}/${id}/desired` (exactly: no wildcard).
 *
 * No device writes a desired topic, its own included (only the agent, whose
 * in-process link no ACL applies to, publishes them), and none reads another
 * device's. `configRoot` is `configuration.topicRoot`, fixed for the
 * broker's life (restart-only).
 */
export class TopicAcl {
  constructor(
    private readonly prefix: string,
    private readonly configRoot = 'config',
  ) {}

  mayPublish(listener: ListenerName, id: string, topic: string): boolean {
    if (topic === `${this.prefix}/${id}/request`) return true;
    if (listener === 'provisioning') return false;
    const levels = topic.split('/');
    // Before the namespaces below: a configuration topic is never a device's to write, whatever its first level.
    if (levels[0] === this.configRoot) return topic === `${this.configRoot}/${id}/reported`;
    switch (levels[0]) {
      case 'devices':
        return levels[1] === id;
      case 'spBv1.0':
        return levels.length >= 4 && levels[3] === id;
      case 'homie':
        return levels.length >= 3 && levels[1] === id;
      case 'homeassistant':
        return levels.length >= 4 && levels[2] === id;
      default:
        return false;
    }
  }

  /**
   * Whether a client may publish to `topic` retained. Not a configuration
   * report: the broker would hand a stale one to the agent on every
   * subscription (the agent drops retained reports from any broker).
   */
  mayRetain(topic: string): boolean {
    return topic.split('/')[0] !== this.configRoot;
  }

  maySubscribe(listener: ListenerName, id: string, filter: string): boolean {
    return this.mayReceive(listener, id, filter);
  }

  /**
   * Whether a message on `topic` may be delivered to the client. Checked on
   * every delivery too, because a non-clean session's queued messages are
   * keyed by client id, which another identity may later connect with.
   */
  mayReceive(listener: ListenerName, id: string, topic: string): boolean {
    if (topic === `${this.prefix}/${id}/response`) return true;
    if (listener === 'provisioning') return false;
    const levels = topic.split('/');
    if (levels[0] === this.configRoot) return topic === `${this.configRoot}/${id}/desired`;
    // A filter's wildcards are confined to the levels below the device's own.
    return levels[0] === 'devices' && levels[1] === id;
  }
}

/** First topic levels the devices' own namespaces and announcements use: a configuration root there would mix with them. */
const TAKEN_ROOTS = ['devices', 'spBv1.0', 'homie', 'homeassistant'];

/**
 * Why `configRoot` (configuration.topicRoot) cannot share a broker with the
 * other topics, or undefined when it can: under a device's own namespace
 * (`devices/<id>/#`) a device could write its own desired topic.
 */
export function configRootProblem(configRoot: string, prefix: string): string | undefined {
  if (TAKEN_ROOTS.includes(configRoot) || prefix.split('/')[0] === configRoot)
    return `configuration.topicRoot ${JSON.stringify(configRoot)} is the first level of other topics (${[...TAKEN_ROOTS, prefix].join(', ')}): choose another`;
  return undefined;
}
