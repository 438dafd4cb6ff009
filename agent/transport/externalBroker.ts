import mqtt, { type IClientPublishOptions, type MqttClient } from 'mqtt';
import type { Logger } from '../log.js';
import type { Service } from '../lifecycle/service.js';
import type { BrokerLink, InboundMessage, MessageHandler, OutboundOptions } from './types.js';
import { PeerError, TimeoutError } from '../errors.js';

export interface ExternalBrokerDeps {
  log: Logger;
  url: string;
  clientId: string;
  /** The agent-client identity and the CA the broker's certificate must chain to (PEM). */
  tls: () => { key: string; cert: string; ca: string };
  /** How long start() waits for the first connection before it carries on and keeps trying. */
  connectWaitMs?: number;
}

/**
 * MQTT topic filter match (`+` one level, `#` the rest). Compares level by
 * level in place: it runs for every inbound message, and splitting both
 * strings cost two arrays and their strings per message.
 */
export function topicMatches(filter: string, topic: string): boolean {
  let f = 0;
  let t = 0;
  for (;;) {
    const fEnd = endOfLevel(filter, f);
    if (fEnd - f === 1 && filter.charCodeAt(f) === 0x23) return true; // '#'
    if (t > topic.length) return false; // the topic has no level left
    const tEnd = endOfLevel(topic, t);
    const plus = fEnd - f === 1 && filter.charCodeAt(f) === 0x2b; // '+'
    if (!plus && !sameLevel(filter, f, fEnd, topic, t, tEnd)) return false;
    f = fEnd + 1;
    t = tEnd + 1;
    if (f > filter.length) return t > topic.length;
  }
}

/** Where the level starting at `from` ends (the next '/', or the end). */
const endOfLevel = (s: string, from: number): number => {
  const i = s.indexOf('/', from);
  return i < 0 ? s.length : i;
};

const sameLevel = (a: string, aFrom: number, aEnd: number, b: string, bFrom: number, bEnd: number): boolean => {
  if (aEnd - aFrom !== bEnd - bFrom) return false;
  for (let i = 0; i < aEnd - aFrom; i++) if (a.charCodeAt(aFrom + i) !== b.charCodeAt(bFrom + i)) return false;
  return true;
};

/** MQTT.js logs through `debug` unless given a logger: every call builds its arguments even when off. Kept when DEBUG asks for it. */
const mqttLog = (): { log?: (...args: unknown[]) => void } => (process.env.DEBUG ? {} : { log: () => undefined });

/**
 * The agent as a client of the plant's broker: MQTT 5 over mutual TLS with
 * its agent-client certificate, the server verified against the gateway CA.
 * A persistent session (clean start off, 7-day expiry) makes the broker keep
 * the QoS 1 requests that arrive while the agent is down. A broker that is
 * not there at start does not stop the agent: it keeps reconnecting.
 */
export class ExternalBroker implements Service, BrokerLink {
  readonly name = 'mqtt-link';
  private client: MqttClient | undefined;
  private readonly handlers: { filters: string[]; handler: MessageHandler }[] = [];
  private readonly connectListeners: (() => void)[] = [];

  constructor(private readonly deps: ExternalBrokerDeps) {}

  async start(): Promise<void> {
    const { log, url } = this.deps;
    const tls = this.deps.tls();
    const client = mqtt.connect(url, {
      clientId: this.deps.clientId,
      protocolVersion: 5,
      clean: false,
      properties: { sessionExpiryInterval: 7 * 86_400 },
      key: tls.key,
      cert: tls.cert,
      ca: tls.ca,
      rejectUnauthorized: true,
      reconnectPeriod: 2_000,
      connectTimeout: 10_000,
      ...mqttLog(),
    });
    this.client = client;
    client.on('message', (topic, payload, packet) => {
      const props = packet.properties;
      const message = {
        topic,
        payload,
        ...(props?.responseTopic !== undefined ? { responseTopic: props.responseTopic } : {}),
        ...(props?.correlationData !== undefined ? { correlationData: props.correlationData } : {}),
        ...(packet.retain ? { retain: true } : {}),
      };
      for (const h of this.handlers) if (h.filters.some((f) => topicMatches(f, topic))) h.handler(message);
    });
    client.on('connect', () => {
      log.info({ url }, 'connected to the MQTT broker');
      for (const listener of this.connectListeners) {
        try {
          listener();
        } catch (err) {
          log.error({ err }, 'MQTT connect listener threw');
        }
      }
    });
    client.on('offline', () => log.warn({ url }, 'MQTT broker unreachable; reconnecting'));
    client.on('error', (err) => log.warn({ err: { message: err.message, code: (err as { code?: unknown }).code }, url }, 'MQTT connection error'));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        log.warn({ url }, 'MQTT broker not reachable yet; carrying on and retrying');
        resolve();
      }, this.deps.connectWaitMs ?? 5_000);
      client.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  async subscribe(filters: string[], handler: MessageHandler): Promise<void> {
    if (filters.length === 0) return;
    this.handlers.push({ filters, handler });
    // MQTT.js resubscribes after a reconnect; with a persistent session the broker also remembers.
    await this.client!.subscribeAsync(filters, { qos: 1 }).catch((err: Error) => {
      this.deps.log.warn({ err: { message: err.message }, filters }, 'MQTT subscribe not confirmed yet; it is retried on reconnect');
    });
  }

  async retained(filters: string[], listenMs: number): Promise<InboundMessage[]> {
    const client = this.client;
    if (!client?.connected) throw new PeerError('BROKER_UNAVAILABLE', `not connected to the MQTT broker ${this.deps.url}`);
    const got: InboundMessage[] = [];
    const collect = (topic: string, payload: Buffer, packet: { retain?: boolean }) => {
      if (packet.retain && filters.some((f) => topicMatches(f, topic))) got.push({ topic, payload });
    };
    client.on('message', collect);
    try {
      // A SUBSCRIBE repeated on the session makes the broker send the retained messages again (MQTT 5, 3.8.4).
      // MQTT.js leaves out filters it has subscribed already unless told `resubscribe`.
      await client.subscribeAsync({ ...Object.fromEntries(filters.map((f) => [f, { qos: 1 as const, rh: 0 }])), resubscribe: true } as unknown as Record<
        string,
        { qos: 1; rh: number }
      >);
      await new Promise((r) => setTimeout(r, listenMs));
    } finally {
      client.off('message', collect);
    }
    return got;
  }

  async publish(topic: string, payload: Buffer, options: OutboundOptions): Promise<void> {
    const opts: IClientPublishOptions = { qos: options.qos, retain: options.retain === true };
    if (options.correlationData) opts.properties = { correlationData: options.correlationData };
    await this.client!.publishAsync(topic, payload, opts);
  }

  isConnected(): boolean {
    return this.client?.connected ?? false;
  }

  onConnect(listener: () => void): void {
    this.connectListeners.push(listener);
  }

  /**
   * Connects a second time with `clientId` (clean start, no session kept)
   * and leaves at once. Mosquitto lets a new connection take a client id
   * over, whatever its user: it closes the connection that held it and
   * drops that session. The agent's identity is unchanged: the ACL applies
   * to it as always.
   */
  async takeOver(clientId: string, timeoutMs = 10_000): Promise<void> {
    const tls = this.deps.tls();
    const client = mqtt.connect(this.deps.url, {
      clientId,
      protocolVersion: 5,
      clean: true,
      properties: { sessionExpiryInterval: 0 },
      key: tls.key,
      cert: tls.cert,
      ca: tls.ca,
      rejectUnauthorized: true,
      reconnectPeriod: 0,
      connectTimeout: timeoutMs,
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(() => reject(new TimeoutError(`no CONNACK within ${timeoutMs} ms`)), timeoutMs);
        client.once('connect', () => resolve());
        // on, not once: a second error event without a listener would be thrown.
        client.on('error', reject);
        client.once('close', () => reject(new PeerError('BROKER_UNAVAILABLE', 'connection closed before CONNACK')));
      });
      await client.endAsync();
    } finally {
      clearTimeout(timer);
      client.end(true);
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) await client.endAsync(false).catch(() => client.end(true));
  }
}
