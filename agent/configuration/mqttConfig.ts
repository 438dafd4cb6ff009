import { z } from 'zod';
import { DEVICE_ID_PATTERN } from '../../certs/profiles/deviceId.js';
import { PeerError, TimeoutError } from '../errors.js';
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
 * memory only, and an external one may have lost them (restarted without
 * persistence), so every current desired configuration is published again
 * at start and whenever the link connects again (the same version and
 * SHA-256, which a device applies once). Retained reports are dropped: the
 * broker hands them out again on every subscription.
 */
export class MqttConfig implements ConfigDeliverer {
  readonly protocol = 'mqtt' as const;
  private started = false;
  private stopping = new AbortController();
  private republishing: Promise<void> | undefined;
  private republishAgain = false;
  /** Per device name, the sequence number of its last delivery or withdrawal (a republish skips newer ones). */
  private readonly touched = new Map<string, number>();
  private sequence = 0;
  /** Devices already told about in the log for a retained report (once each). */
  private readonly retainedLogged = new Set<string>();
  /** Publishes waiting for the broker, each with its way to give up: one abort listener per signal, not one per delivery. */
  private readonly waiting = new Set<(reason: Error) => void>();
  private readonly watched = new WeakSet<AbortSignal>();

  constructor(private readonly deps: MqttConfigDeps) {}

  /**
   * Subscribes to the reports, registers with the hub, then republishes what
   * is current, now and after every reconnection of the link: a broker that
   * restarted without persistence (or was down at start) has lost the
   * retained messages, and a device still waiting would wait forever.
   */
  async start(): Promise<void> {
    const { link, hub, topicRoot, log } = this.deps;
    this.stopping = new AbortController();
    await link.subscribe([`${topicRoot}/+/reported`], (m) => this.receive(m));
    hub.register(this);
    this.started = true;
    link.onConnect?.(() => {
      if (this.started) this.republish('reconnected').catch((err: unknown) => log.error({ err }, 'desired configurations could not be republished'));
    });
    // Awaited, before the configuration service starts: a newer version it publishes cannot be overtaken by this older snapshot.
    if (!link.isConnected()) {
      const devices = hub.current('mqtt').length;
      if (devices > 0) log.warn({ devices }, 'desired configurations not republished yet: the MQTT broker is not connected (republished when it connects)');
      return;
    }
    await this.republish('start');
  }

  /** Unregisters; reports that still arrive on the (closing) link are dropped, a republish under way stops. */
  stop(): void {
    if (this.started) this.deps.hub.unregister('mqtt');
    this.started = false;
    this.stopping.abort();
  }

  /**
   * Publishes every current desired configuration again (same version and
   * SHA-256: a device applies it once). One at a time per call; a call while
   * one runs makes it run once more. A device whose delivery or withdrawal
   * began after the snapshot was read is skipped (its newer message must
   * stay the retained one); a link lost midway ends it (the next connection
   * starts it again).
   */
  private async republish(why: 'start' | 'reconnected'): Promise<void> {
    if (this.republishing) {
      this.republishAgain = true;
      return this.republishing;
    }
    const run = async (): Promise<void> => {
      do {
        this.republishAgain = false;
        await this.republishOnce(why);
      } while (this.republishAgain && this.started);
    };
    this.republishing = run().finally(() => (this.republishing = undefined));
    return this.republishing;
  }

  private async republishOnce(why: string): Promise<void> {
    const { link, hub, log } = this.deps;
    const since = this.sequence;
    const current = hub.current('mqtt');
    const signal = this.stopping.signal;
    let failed = 0;
    let skipped = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < current.length; i = next++) {
        const desired = current[i]!;
        if (!this.started || signal.aborted || !link.isConnected()) {
          skipped++;
          continue;
        }
        if ((this.touched.get(desired.name) ?? 0) > since) continue;
        try {
          await this.bounded(this.publish(desired.name, desiredPayload(desired)), signal);
        } catch (err) {
          // Stopping: nothing to report per device.
          if (signal.aborted) {
            skipped++;
            continue;
          }
          failed++;
          log.warn({ err, deviceId: desired.deviceId, profile: desired.profile, version: desired.version }, 'desired configuration not republished');
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(REPUBLISH_AT_ONCE, current.length) }, worker));
    if (current.length > 0) log.info({ devices: current.length, failed, skipped, why }, 'desired configurations republished');
  }

  async deliver(desired: DesiredConfig, signal: AbortSignal): Promise<DeliveryOutcome> {
    const { log, link } = this.deps;
    if (signal.aborted) return { kind: 'failed', reason: 'delivery aborted', retry: true };
    if (!link.isConnected()) return { kind: 'failed', reason: 'the MQTT broker is not connected', retry: true };
    // The desired state is committed (the service calls deliver only after that): a crash here is repaired by the resend.
    failpoint('configuration.publish.before');
    this.touched.set(desired.name, ++this.sequence);
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

  /**
   * Clears the retained message (an empty retained payload), so a device
   * reconnecting later gets nothing. Throws at once when the link is down,
   * and when the broker does not take it within publishTimeoutMs (the
   * service tries again later; the device is held meanwhile).
   */
  async withdraw(device: { deviceId: string; name: string }): Promise<void> {
    if (!this.deps.link.isConnected()) throw new PeerError('BROKER_UNAVAILABLE', 'the MQTT broker is not connected');
    this.touched.set(device.name, ++this.sequence);
    await this.bounded(this.publish(device.name, Buffer.alloc(0)), this.stopping.signal);
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
    if (message.retain) {
      // Kept by the broker, perhaps long ago (a refusal of an older version): sent again on every subscription, it is no news.
      if (!this.retainedLogged.has(name)) {
        this.retainedLogged.add(name);
        log.warn({ device: name, topic: message.topic }, 'retained configuration report dropped: a device publishes its reports without retain');
      }
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
