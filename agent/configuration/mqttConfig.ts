import { z } from 'zod';
import { DEVICE_ID_PATTERN } from '../../certs/profiles/deviceId.js';
import { TimeoutError } from '../errors.js';
import { failpoint } from '../failpoints.js';
import type { Logger } from '../log.js';
import type { BrokerLink, InboundMessage } from '../transport/types.js';
import type { ConfigDeliverer, ConfigurationHub, DeliveryOutcome, DesiredConfig, DeviceReport } from './types.js';

export interface MqttConfigDeps {
  log: Logger;
  /** The agent's own link to the broker (embedded or external); no device ACL applies to it. */
  link: BrokerLink;
  hub: ConfigurationHub;
  /** configuration.topicRoot, fixed for the service's life (restart-only: the broker ACLs are built with it). */
  topicRoot: string;
  /** How long one publish may wait for the broker (external: PUBACK) before the delivery is retried later. */
  publishTimeoutMs?: number;
}

/** Republished messages waiting for the broker at once at start (one per device; their order does not matter). */
const REPUBLISH_AT_ONCE = 64;

/** What a device publishes on `<root>/<id>/reported`: exactly these fields (docs/device-configuration.md). */
const reportSchema = z
  .strictObject({
    profile: z.string().min(1).max(128),
    version: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, 'lower-case hex SHA-256')
      .optional(),
    status: z.enum(['applied', 'refused']),
    error: z.string().min(1).max(1024).optional(),
  })
  .refine((r) => r.status === 'applied' || r.error !== undefined, { message: 'a refusal needs an error', path: ['error'] })
  .refine((r) => r.status === 'refused' || r.error === undefined, { message: 'only a refusal has an error', path: ['error'] });

/** The retained payload of `<root>/<id>/desired`: what the device compares with what it applied last. */
export function desiredPayload(d: Pick<DesiredConfig, 'profile' | 'version' | 'sha256' | 'values'>): Buffer {
  return Buffer.from(JSON.stringify({ profile: d.profile, version: d.version, sha256: d.sha256, values: d.values }));
}

/**
 * Configuration for MQTT devices (docs/device-configuration.md, "MQTT
 * devices"). The agent publishes a device's desired configuration to
 * `<root>/<id>/desired`, QoS 1 and retained, so a device that is offline
 * gets it when it next subscribes; the device answers on
 * `<root>/<id>/reported`. The broker ACLs (brokerAcl.ts, mosquittoAcl.ts)
 * let only that device read its desired topic and write its reported topic.
 *
 * The state is the configuration service's: `deliver` is called with a
 * version already committed, and reports are handed to the hub, which
 * decides whether they count. The embedded broker keeps retained messages in
 * memory only, so `start` publishes every current desired configuration
 * again (the same version and SHA-256, which a device applies once).
 */
export class MqttConfig implements ConfigDeliverer {
  readonly protocol = 'mqtt' as const;
  private started = false;
  /** Publishes waiting for the broker, each with its way to give up: one abort listener per signal, not one per delivery. */
  private readonly waiting = new Set<(reason: Error) => void>();
  private readonly watched = new WeakSet<AbortSignal>();

  constructor(private readonly deps: MqttConfigDeps) {}

  /** Subscribes to the reports, registers with the hub, then republishes what is current. */
  async start(): Promise<void> {
    const { link, hub, topicRoot, log } = this.deps;
    await link.subscribe([`${topicRoot}/+/reported`], (m) => this.receive(m));
    hub.register(this);
    this.started = true;
    // Awaited, before the configuration service starts: a newer version it publishes cannot be overtaken by this older snapshot.
    const current = hub.current('mqtt');
    if (current.length > 0 && !link.isConnected()) {
      // An external broker not reached yet: it keeps its own retained messages, and pending deliveries are retried.
      log.warn({ devices: current.length }, 'desired configurations not republished: the MQTT broker is not connected');
      return;
    }
    const signal = new AbortController().signal;
    let failed = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < current.length; i = next++) {
        const desired = current[i]!;
        try {
          await this.bounded(this.publish(desired.name, desiredPayload(desired)), signal);
        } catch (err) {
          failed++;
          log.warn({ err, deviceId: desired.deviceId, profile: desired.profile, version: desired.version }, 'desired configuration not republished');
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(REPUBLISH_AT_ONCE, current.length) }, worker));
    if (current.length > 0) log.info({ devices: current.length, failed }, 'desired configurations republished');
  }

  /** Unregisters; reports that still arrive on the (closing) link are dropped. */
  stop(): void {
    if (this.started) this.deps.hub.unregister('mqtt');
    this.started = false;
  }

  async deliver(desired: DesiredConfig, signal: AbortSignal): Promise<DeliveryOutcome> {
    const { log, link } = this.deps;
    if (signal.aborted) return { kind: 'failed', reason: 'delivery aborted', retry: true };
    if (!link.isConnected()) return { kind: 'failed', reason: 'the MQTT broker is not connected', retry: true };
    // The desired state is committed (the service calls deliver only after that): a crash here is repaired by the resend.
    failpoint('configuration.publish.before');
    try {
      await this.bounded(this.publish(desired.name, desiredPayload(desired)), signal);
    } catch (err) {
      const reason = `publish to ${this.desiredTopic(desired.name)} failed: ${(err as Error).message}`;
      log.warn({ deviceId: desired.deviceId, profile: desired.profile, version: desired.version, reason }, 'desired configuration not published');
      return { kind: 'failed', reason, retry: true };
    }
    log.debug({ deviceId: desired.deviceId, profile: desired.profile, version: desired.version }, 'desired configuration published');
    return { kind: 'published' };
  }

  /** Clears the retained message (an empty retained payload), so a device reconnecting later gets nothing. */
  async withdraw(device: { deviceId: string; name: string }): Promise<void> {
    await this.publish(device.name, Buffer.alloc(0));
    this.deps.log.info({ deviceId: device.deviceId }, 'desired configuration withdrawn');
  }

  /**
   * A message on `<root>/+/reported`. The broker ACL let only the device
   * whose certificate CN is the topic's id publish it. Anything malformed is
   * logged with the device id and dropped: a report never throws.
   */
  receive(message: InboundMessage): void {
    const { log, hub, topicRoot } = this.deps;
    const levels = message.topic.split('/');
    const name = levels[1] ?? '';
    if (levels.length !== 3 || levels[0] !== topicRoot || levels[2] !== 'reported' || !DEVICE_ID_PATTERN.test(name)) {
      log.warn({ topic: message.topic }, 'configuration report on an unexpected topic dropped');
      return;
    }
    if (!this.started) {
      log.debug({ device: name }, 'configuration report dropped: configuration delivery is stopped');
      return;
    }
    const report = parseReport(message.payload);
    if (typeof report === 'string') {
      log.warn({ device: name, problem: report, bytes: message.payload.length }, 'malformed configuration report dropped');
      return;
    }
    try {
      const outcome = hub.reported('mqtt', name, report);
      const fields = {
        device: name,
        profile: report.profile,
        version: report.version,
        reported: report.status,
        ...(report.error ? { error: report.error } : {}),
      };
      if (outcome.accepted) log.info({ ...fields, status: outcome.status }, 'configuration report recorded');
      else log.warn({ ...fields, reason: outcome.reason }, 'configuration report refused');
    } catch (err) {
      log.error({ err, device: name }, 'configuration report could not be recorded');
    }
  }

  /** `work`, or a rejection when the signal aborts or publishTimeoutMs passes first (the publish itself may still complete). */
  private bounded<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
    if (!this.watched.has(signal)) {
      this.watched.add(signal);
      signal.addEventListener(
        'abort',
        () => {
          for (const giveUp of [...this.waiting]) giveUp(new TimeoutError('delivery aborted: the agent is stopping'));
        },
        { once: true },
      );
    }
    const timeoutMs = this.deps.publishTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    let giveUp!: (reason: Error) => void;
    const stop = new Promise<never>((_, reject) => {
      giveUp = reject;
      timer = setTimeout(() => reject(new TimeoutError(`no answer from the broker within ${timeoutMs} ms`)), timeoutMs);
    });
    this.waiting.add(giveUp);
    return Promise.race([work, stop]).finally(() => {
      clearTimeout(timer);
      this.waiting.delete(giveUp);
    });
  }

  private desiredTopic(name: string): string {
    return `${this.deps.topicRoot}/${name}/desired`;
  }

  private publish(name: string, payload: Buffer): Promise<void> {
    return this.deps.link.publish(this.desiredTopic(name), payload, { qos: 1, retain: true });
  }
}

/** The report, or what is wrong with it (one line). */
export function parseReport(payload: Buffer): DeviceReport | string {
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    return `not JSON: ${(err as Error).message}`;
  }
  const parsed = reportSchema.safeParse(body);
  if (!parsed.success) return parsed.error.issues.map((i) => `${i.path.join('.') || 'report'}: ${i.message}`).join('; ');
  const r = parsed.data;
  return {
    profile: r.profile,
    version: r.version,
    status: r.status,
    ...(r.sha256 !== undefined ? { sha256: r.sha256 } : {}),
    ...(r.error !== undefined ? { error: r.error } : {}),
  };
}
