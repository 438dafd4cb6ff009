import type { AccessGate } from '../transport/types.js';
import type { CaService } from '../ca/caService.js';
import { DEVICE_ID_PATTERN } from '../../certs/profiles/deviceId.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { DeviceRepository } from '../store/deviceRepository.js';
import type { EnrollmentRepository, EnrollmentRequest } from '../store/enrollmentRepository.js';
import type { Store } from '../store/database.js';
import type { BrokerLink, InboundMessage } from '../transport/types.js';
import type { EnrollmentPolicy } from './policy.js';
import { DeviceLocks } from './deviceLocks.js';
import { encodeAnswer } from './answerPayload.js';
import { EnrollmentFlow, type Answer } from './enrollment.js';
import { EnrollmentMetrics, type DropReason, type RejectionReason } from './enrollmentMetrics.js';
import { RateLimiter } from './rateLimiter.js';
import { parseRequest, peekRequestId, RequestError, type EnrollmentRequestMessage } from './request.js';
import { TimeoutError } from '../errors.js';
import type { EnrollmentWitness } from './enrollmentWitness.js';

export type { Answer };

export interface EnrollmentDeps {
  log: Logger;
  metrics: Metrics;
  config: () => Config['mqtt'];
  store: Store;
  devices: DeviceRepository;
  enrollments: EnrollmentRepository;
  policy: () => EnrollmentPolicy;
  ca: CaService;
  link: BrokerLink;
  gate: AccessGate;
  /** The mutual-TLS URL devices are told to use. */
  brokerUrl: () => string;
  /** Ids no device may enroll under: the agent's own (its CN on the broker), the broker's. */
  reservedIds: () => string[];
  /** The device report's sightings (agent/report/sightings.ts). */
  witness?: EnrollmentWitness;
}

interface Work {
  name: string;
  message: InboundMessage;
  /** Set for a payload over mqtt.maxPayloadBytes: its size (the payload itself is not kept) and the requestId read from it. */
  tooLarge?: { bytes: number; requestId: string | undefined };
}

const REQUEST_ERROR_REASONS: Record<RequestError['code'], RejectionReason> = {
  NOT_JSON: 'not_json',
  TOO_DEEP: 'too_deeply_nested',
  PROTOTYPE_KEY: 'prototype_key',
  INVALID: 'schema',
};

/** A response topic may name no wildcard or NUL (an answer to `+`/`#` would make the broker drop the agent). */
const RESPONSE_TOPIC = /^[^+#\u0000]{1,256}$/;
const ANSWER_TIMEOUT_MS = 10_000;

/**
 * The MQTT adapter of enrollment: reads {prefix}/{deviceId}/request (topic,
 * rate limits, queue, payload size and schema), hands the request to the
 * protocol-independent flow (enrollment.ts: decision, issuance, record), and
 * publishes its answer on {prefix}/{deviceId}/response (or the MQTT 5
 * response topic). Every answer leaves only after the state that explains it
 * is durably committed. Bad input is answered `rejected` (or dropped when it
 * cannot be answered) and changes nothing; the device's requests are handled
 * one at a time.
 */
export class MqttEnrollment {
  private readonly queue: Work[] = [];
  readonly locks = new DeviceLocks();
  private active = 0;
  private readonly sending = new Set<Promise<void>>();
  private readonly limiter: RateLimiter;
  private readonly metrics: EnrollmentMetrics;
  private readonly flow: EnrollmentFlow;
  private idle: (() => void) | undefined;

  constructor(private readonly deps: EnrollmentDeps) {
    this.limiter = new RateLimiter(deps.config().limits);
    this.metrics = new EnrollmentMetrics(deps.metrics.registry, () => this.queue.length);
    const { log, store, devices, enrollments, policy, ca, gate, brokerUrl, reservedIds, config, witness } = deps;
    this.flow = new EnrollmentFlow({
      ...(witness ? { witness } : {}),
      log,
      metrics: this.metrics,
      store,
      devices,
      enrollments,
      policy,
      ca,
      gate,
      brokerUrl,
      reservedIds,
      provisioning: (name) => `${config().topicPrefix}/${name}`,
      maxPending: () => config().limits.maxPending,
    });
  }

  filters(): string[] {
    return [`${this.deps.config().topicPrefix}/+/request`];
  }

  reconfigure(): void {
    this.limiter.setLimits(this.deps.config().limits);
  }

  /**
   * Resumes requests approved before a crash or restart, which were not
   * issued (a certificate and its request's outcome are committed together):
   * they are issued and answered.
   */
  async resume(): Promise<void> {
    for (const r of this.deps.enrollments.withStatus('approved')) {
      const name = r.deviceId.slice('mqtt:'.length);
      await this.locks
        .run(name, () => this.issue(r))
        .catch((err: unknown) => this.deps.log.error({ err, device: name, requestId: r.requestId }, 'approved request could not be resumed'));
    }
  }

  /** Takes one message from the broker; never throws. */
  receive(message: InboundMessage): void {
    const { log, config } = this.deps;
    const { topicPrefix, maxPayloadBytes, limits } = config();
    const rest = message.topic.startsWith(`${topicPrefix}/`) ? message.topic.slice(topicPrefix.length + 1).split('/') : [];
    if (rest.length !== 2 || rest[1] !== 'request') return this.drop('unknown_topic', { topic: message.topic.slice(0, 200) });
    const name = rest[0]!;
    if (!DEVICE_ID_PATTERN.test(name)) return this.drop('bad_device_id', { topic: message.topic.slice(0, 200) });
    // Rate limits first: an answer costs a publish, so a flood of oversize requests is held like any other.
    const limited = this.limiter.take(name);
    if (limited !== 'ok') return this.drop(limited === 'device' ? 'rate_limited_device' : 'rate_limited_global', { device: name });
    if (this.queue.length >= limits.queueSize) return this.drop('queue_full', { device: name });
    const bytes = message.payload.length;
    // Too large to read, but the topic names the device: it is answered, without keeping the payload.
    const work: Work =
      bytes > maxPayloadBytes
        ? { name, message: { ...message, payload: Buffer.alloc(0) }, tooLarge: { bytes, requestId: peekRequestId(message.payload) } }
        : { name, message };
    this.queue.push(work);
    log.debug({ device: name, queued: this.queue.length }, 'enrollment request queued');
    this.pump();
  }

  /** Resolves when nothing is queued or running (tests, stop). */
  async drained(): Promise<void> {
    if (this.active > 0 || this.queue.length > 0) await new Promise<void>((resolve) => (this.idle = resolve));
    await Promise.all(this.sending);
  }

  /**
   * Answers without holding the request's worker until the broker confirms
   * (PUBACK): the decision is committed, and a slower broker must not slow
   * the requests behind it. drained() waits for these too.
   */
  private send(topic: string, correlationData: Buffer | undefined, answer: Answer): void {
    const sending = this.answer(topic, correlationData, answer);
    this.sending.add(sending);
    void sending.finally(() => this.sending.delete(sending));
  }

  private drop(reason: DropReason, fields: Record<string, unknown>): void {
    this.metrics.dropped(reason);
    this.deps.log.warn({ ...fields, reason }, 'enrollment message dropped');
  }

  private pump(): void {
    const { workers } = this.deps.config().limits;
    while (this.active < workers) {
      const index = this.queue.findIndex((w) => !this.locks.isBusy(w.name));
      if (index < 0) break;
      const [work] = this.queue.splice(index, 1);
      this.active += 1;
      void this.locks
        .run(work!.name, () => this.handle(work!))
        .catch((err: unknown) => this.deps.log.error({ err, device: work!.name }, 'enrollment request failed'))
        .finally(() => {
          this.active -= 1;
          this.pump();
          if (this.active === 0 && this.queue.length === 0) this.idle?.();
        });
    }
  }

  private async handle({ name, message, tooLarge }: Work): Promise<void> {
    const { topicPrefix, maxPayloadBytes } = this.deps.config();
    const defaultTopic = `${topicPrefix}/${name}/response`;
    let responseTopic = defaultTopic;
    if (message.responseTopic !== undefined) {
      const below = message.responseTopic === defaultTopic || message.responseTopic.startsWith(`${defaultTopic}/`);
      if (!below || !RESPONSE_TOPIC.test(message.responseTopic)) {
        const text = `the response topic must be ${defaultTopic} or below it, without wildcards, at most 256 characters`;
        return this.send(defaultTopic, message.correlationData, this.flow.refusal(name, null, 'response_topic', text));
      }
      responseTopic = message.responseTopic;
    }
    const reply = async (answer: Answer | undefined) => {
      if (!answer) return;
      // Answers waiting for their PUBACK are bounded: beyond four per worker (a slow broker), the worker waits for its own.
      if (this.sending.size >= 4 * this.deps.config().limits.workers) await this.answer(responseTopic, message.correlationData, answer);
      else this.send(responseTopic, message.correlationData, answer);
    };
    if (tooLarge) {
      return reply(
        this.flow.refusal(
          name,
          tooLarge.requestId ?? null,
          'too_large',
          `request is ${tooLarge.bytes} bytes, over the limit of ${maxPayloadBytes} bytes (mqtt.maxPayloadBytes)`,
        ),
      );
    }
    let request: EnrollmentRequestMessage;
    try {
      request = parseRequest(message.payload);
    } catch (err) {
      if (!(err instanceof RequestError)) throw err;
      return reply(this.flow.refusal(name, err.requestId ?? null, REQUEST_ERROR_REASONS[err.code], err.message));
    }
    const replyTo = {
      ...(responseTopic === defaultTopic ? {} : { responseTopic }),
      ...(message.correlationData !== undefined ? { correlationData: message.correlationData } : {}),
    };
    // The request's checks (device, earlier request, token, the CA's key checks) read in one read transaction.
    return reply(await this.deps.store.reading(() => this.flow.submit(name, request, replyTo)));
  }

  /** Issues for an approved request (a technician's approval, a resumed one) and answers it once the outcome is committed. */
  async issue(request: EnrollmentRequest): Promise<void> {
    const answer = await this.flow.issue(request);
    if (answer) await this.answer(this.topicOf(request), request.correlationData, answer);
  }

  /** Answers a request a technician's decision settled: a rejection is counted as one. */
  async answerRecorded(request: EnrollmentRequest): Promise<void> {
    if (request.status === 'rejected') this.metrics.rejected('technician');
    await this.answer(this.topicOf(request), request.correlationData, this.flow.answerFor(request));
  }

  private topicOf(request: EnrollmentRequest): string {
    return request.responseTopic ?? `${this.deps.config().topicPrefix}/${request.deviceId.slice('mqtt:'.length)}/response`;
  }

  private async answer(topic: string, correlationData: Buffer | undefined, answer: Answer): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const sent = this.deps.link.publish(topic, encodeAnswer(answer), { qos: 1, ...(correlationData ? { correlationData } : {}) });
      const late = new Promise<never>(
        (_, reject) => (timer = setTimeout(() => reject(new TimeoutError(`no PUBACK within ${ANSWER_TIMEOUT_MS} ms`)), ANSWER_TIMEOUT_MS)),
      );
      await Promise.race([sent, late]);
    } catch (err) {
      // The decision is on record: the device gets the same answer when it repeats the request.
      this.deps.log.warn({ err, topic, requestId: answer.requestId }, 'enrollment answer could not be published');
    } finally {
      clearTimeout(timer);
    }
  }
}
