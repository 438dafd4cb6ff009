/**
 * The configuration side of a simulated MQTT device
 * (docs/device-configuration.md, "MQTT devices"): connected over mutual TLS
 * with its certificate, subscribed to `<root>/<id>/desired`, it applies a
 * desired configuration once per (profile, version, sha256) and reports on
 * `<root>/<id>/reported`; chosen devices refuse instead. The simulator
 * (mqttDevices.ts) starts one per device after provisioning when asked to.
 */
import { createHash } from 'node:crypto';
import type { SecureContext, TLSSocket } from 'node:tls';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A desired configuration as the agent publishes it. */
export interface Desired {
  profile: string;
  version: number;
  sha256: string;
  values: Record<string, JsonValue>;
}

/** What a simulated device did with one desired message. */
export interface ConfigEvent {
  id: string;
  /** applied / refused: first time for this (profile, version, sha256); repeated: seen before, the earlier outcome reported again. */
  kind: 'applied' | 'refused' | 'repeated' | 'withdrawn' | 'malformed';
  profile?: string;
  version?: number;
  sha256?: string;
  error?: string;
}

export interface DeviceConfigOptions {
  /** configuration.topicRoot of the agent (default `config`). */
  topicRoot?: string;
  /** Devices that refuse every configuration: their ids, or a fraction (0..1) of the devices, chosen by index. */
  refuse?: string[] | number;
  /** The error a refusing device reports (default: "refused by the simulated device (--refuse-config)"). */
  refuseError?: string;
  /** A device-side check of the values: the error text to refuse them with, or undefined to apply them. */
  check?: (values: Record<string, JsonValue>, id: string) => string | undefined;
  /** Told of every desired message a device handled, in order. */
  onEvent?: (event: ConfigEvent) => void;
}

export const DEFAULT_REFUSE_ERROR = 'refused by the simulated device (--refuse-config)';

/** JSON with object keys sorted at every level and no white space: what the agent hashes into `sha256`. */
export function canonicalJson(value: JsonValue): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k]!)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** Whether device number `index` of the run refuses (a fraction picks every n-th device, spread evenly). */
export function refuses(refuse: DeviceConfigOptions['refuse'], id: string, index: number): boolean {
  if (refuse === undefined) return false;
  if (Array.isArray(refuse)) return refuse.includes(id);
  return Math.floor((index + 1) * refuse) > Math.floor(index * refuse);
}

/** The desired message, or what is wrong with it. */
export function parseDesired(payload: Buffer): Desired | string {
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    return `not JSON: ${(err as Error).message}`;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'not a JSON object';
  if (typeof body.profile !== 'string' || body.profile === '') return 'no profile';
  if (!Number.isSafeInteger(body.version) || (body.version as number) < 1) return 'no version';
  if (typeof body.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(body.sha256)) return 'no sha256';
  if (typeof body.values !== 'object' || body.values === null || Array.isArray(body.values)) return 'no values object';
  return { profile: body.profile, version: body.version as number, sha256: body.sha256, values: body.values as Record<string, JsonValue> };
}

/**
 * One device's configuration client. It reconnects on its own (the agent
 * may restart), and on every (re)subscription the broker hands it the
 * retained desired message again: it then reports its earlier outcome
 * again, without applying twice, so a report lost in a crash is repaired.
 */
export class ConfiguredDevice {
  /** Every configuration applied, in order: a version applied twice would show here twice. */
  readonly applied: Desired[] = [];
  readonly events: ConfigEvent[] = [];
  /** Connections (the first and each reconnection) that resumed an earlier TLS session of this device. */
  resumedConnections = 0;
  private last: { key: string; report: Record<string, unknown> } | undefined;
  private readonly client: MqttClient;
  readonly ready: Promise<void>;

  constructor(
    readonly id: string,
    connection: {
      url: string;
      key: string;
      cert: string;
      ca?: string;
      protocolVersion?: 4 | 5;
      /** The device's TLS identity (key, certificate, CA) made once, instead of key/cert/ca parsed per connection. */
      secureContext?: SecureContext;
      /** A TLS session of the device's earlier connection to this listener: offered, and each newer one offered on reconnect. */
      session?: Buffer;
    },
    private readonly options: DeviceConfigOptions & { refusing: boolean },
  ) {
    const root = options.topicRoot ?? 'config';
    const desiredTopic = `${root}/${id}/desired`;
    const reportedTopic = `${root}/${id}/reported`;
    this.client = mqtt.connect(connection.url, <IClientOptions>{
      clientId: `${id}-config`,
      protocolVersion: connection.protocolVersion ?? 4,
      key: connection.key,
      cert: connection.cert,
      ...(connection.ca ? { ca: connection.ca } : {}),
      ...(connection.secureContext ? { secureContext: connection.secureContext } : {}),
      ...(connection.session ? { session: connection.session } : {}),
      clean: true,
      reconnectPeriod: 500,
      connectTimeout: 10_000,
    });
    // Errors (refused while the agent restarts, TLS alerts) end in a reconnect; without a listener they would throw.
    this.client.on('error', () => undefined);
    if (connection.session) {
      // MQTT.js builds each reconnection's socket from client.options: the newest session goes there, as a device's TLS stack keeps it.
      // (TLS 1.3 sends the ticket right after the handshake, before CONNACK; a later one comes as 'session'.)
      this.client.on('connect', () => {
        const socket = this.client.stream as TLSSocket;
        if (socket.isSessionReused()) this.resumedConnections++;
        const keep = (s: Buffer | undefined) => {
          // MQTT.js hands its options to tls.connect whole; its types do not list `session`.
          if (s) (this.client.options as { session?: Buffer }).session = s;
        };
        keep(socket.getSession());
        socket.on('session', keep);
      });
    }
    this.client.on('message', (topic, payload) => {
      if (topic !== desiredTopic) return;
      const report = this.handle(payload);
      if (report) this.client.publish(reportedTopic, JSON.stringify(report), { qos: 1 });
    });
    // MQTT.js subscribes again after each reconnect (resubscribe), and the broker sends the retained message again.
    this.ready = new Promise((resolve, reject) => {
      this.client.once('connect', () => {
        this.client.subscribeAsync(desiredTopic, { qos: 1 }).then((granted) => {
          if (granted[0]?.qos === 128) reject(new Error(`the broker refused the subscription to ${desiredTopic}`));
          else resolve();
        }, reject);
      });
    });
    this.ready.catch(() => undefined);
  }

  /** The report to publish for one desired message, if any. */
  private handle(payload: Buffer): Record<string, unknown> | undefined {
    if (payload.length === 0) return void this.emit({ id: this.id, kind: 'withdrawn' });
    const desired = parseDesired(payload);
    if (typeof desired === 'string') return void this.emit({ id: this.id, kind: 'malformed', error: desired });
    const key = `${desired.profile}\u0000${desired.version}\u0000${desired.sha256}`;
    const about = { profile: desired.profile, version: desired.version, sha256: desired.sha256 };
    if (this.last?.key === key) {
      this.emit({ id: this.id, kind: 'repeated', ...about });
      return this.last.report;
    }
    let error: string | undefined;
    if (sha256(canonicalJson(desired.values)) !== desired.sha256) error = 'sha256 does not match the values';
    else if (this.options.refusing) error = this.options.refuseError ?? DEFAULT_REFUSE_ERROR;
    else error = this.options.check?.(desired.values, this.id);
    const report = error === undefined ? { ...about, status: 'applied' } : { ...about, status: 'refused', error };
    this.last = { key, report };
    if (error === undefined) this.applied.push(desired);
    this.emit({ id: this.id, kind: error === undefined ? 'applied' : 'refused', ...about, ...(error !== undefined ? { error } : {}) });
    return report;
  }

  private emit(event: ConfigEvent): void {
    this.events.push(event);
    this.options.onEvent?.(event);
  }

  /** The configuration in force on the device (the last applied), if any. */
  get current(): Desired | undefined {
    return this.applied.at(-1);
  }

  async stop(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.client.endAsync(true).catch(() => undefined), new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000)))]);
    clearTimeout(timer);
  }
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
