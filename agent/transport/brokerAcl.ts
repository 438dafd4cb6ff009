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
 *   `homeassistant/+/${id}/...` and its own request; subscribe `devices/${id}`
 *   and below (wildcards only below `id`) and its own response.
 */
export class TopicAcl {
  constructor(private readonly prefix: string) {}

  mayPublish(listener: ListenerName, id: string, topic: string): boolean {
    if (topic === `${this.prefix}/${id}/request`) return true;
    if (listener === 'provisioning') return false;
    const levels = topic.split('/');
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
    // A filter's wildcards are confined to the levels below the device's own.
    return levels[0] === 'devices' && levels[1] === id;
  }
}
