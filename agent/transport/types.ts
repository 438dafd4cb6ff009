/**
 * The agent's own view of a broker. Onboarding and discovery use these
 * types; MQTT.js and aedes types stop in agent/transport/.
 */
export interface InboundMessage {
  topic: string;
  payload: Buffer;
  /** MQTT 5 response topic of the request, when the client set one. */
  responseTopic?: string;
  /** MQTT 5 correlation data, echoed in the answer. */
  correlationData?: Buffer;
  /**
   * Published retained. From an external broker: sent out of its retained
   * store (on a new or repeated subscription), not as it was published, so
   * possibly old news.
   */
  retain?: boolean;
}

export interface OutboundOptions {
  qos: 0 | 1;
  correlationData?: Buffer;
  /**
   * Keep the message as the topic's retained message, handed to every later
   * subscriber (configuration: `<topicRoot>/<id>/desired`). An empty payload
   * with `retain` clears the topic's retained message.
   */
  retain?: boolean;
}

export type MessageHandler = (message: InboundMessage) => void;

/** The agent's connection to a broker, embedded or external. */
export interface BrokerLink {
  /** Subscribes to topic filters (wildcards allowed); the handler must not throw. */
  subscribe(filters: string[], handler: MessageHandler): Promise<void>;
  /** Publishes (retained only with `options.retain`); resolves once the broker took it (QoS 1: PUBACK; embedded: stored and dispatched). */
  publish(topic: string, payload: Buffer, options: OutboundOptions): Promise<void>;
  isConnected(): boolean;
  /**
   * Calls `listener` on every connection to the broker made from now on (a
   * reconnection, or the first one when the broker was not there at start).
   * Only a link that can lose its broker (external) has it.
   */
  onConnect?(listener: () => void): void;
  /**
   * The retained messages on these filters now (an on-demand discovery run
   * reads announcements with it). An external broker sends them on a new
   * SUBSCRIBE: what arrives within `listenMs` is returned.
   */
  retained(filters: string[], listenMs: number): Promise<InboundMessage[]>;
}

/**
 * Whether a client certificate may be used on the mutual-TLS listener right
 * now: the broker asks on every connection and before every delivery.
 */
export interface DeviceAccess {
  /** `serial` is lower-case hex, even length, without leading zero bytes. */
  allowed(identity: string, serial: string): boolean;
}

/** What the broker side does when a device's access changes (Mosquitto: ACL + reload; embedded: disconnect). */
export interface AccessGate {
  cutOff(identity: string): Promise<void>;
  restore(identity: string): Promise<void>;
}
