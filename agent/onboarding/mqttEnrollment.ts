import { createHash } from 'node:crypto';
import { CertError } from '../../certs/errors.js';
import { parseCsr, verifyCsr } from '../../certs/x509/csr.js';
import type { AccessGate } from '../transport/types.js';
import type { CaService } from '../ca/caService.js';
import { DEVICE_ID_PATTERN } from '../../certs/profiles/deviceId.js';
import type { Config } from '../config/schema.js';
import type { Device } from '../inventory/device.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { DeviceRepository } from '../store/deviceRepository.js';
import type { EnrollmentRepository, EnrollmentRequest } from '../store/enrollmentRepository.js';
import type { Store } from '../store/database.js';
import type { BrokerLink, InboundMessage } from '../transport/types.js';
import type { EnrollmentPolicy } from './policy.js';
import { DeviceLocks } from './deviceLocks.js';
import { EnrollmentMetrics, type DropReason, type RejectionReason } from './enrollmentMetrics.js';
import { RateLimiter } from './rateLimiter.js';
import { parseRequest, peekRequestId, RequestError, type EnrollmentRequestMessage } from './request.js';

export interface Answer {
  requestId: string | null;
  status: 'issued' | 'pending' | 'rejected';
  certificate?: string;
  caChain?: string[];
  brokerUrl?: string;
  reason?: string;
}

export interface EnrollmentDeps {
  log: Logger;
  metrics: Metrics;
  config: () => Config['mqtt'];
  store: () => Store;
  devices: () => DeviceRepository;
  enrollments: () => EnrollmentRepository;
  policy: () => EnrollmentPolicy;
  ca: CaService;
  link: BrokerLink;
  gate: AccessGate;
  /** The mutual-TLS URL devices are told to use. */
  brokerUrl: () => string;
  /** Ids no device may enroll under: the agent's own (its CN on the broker), the broker's. */
  reservedIds: () => string[];
}

interface Work {
  name: string;
  message: InboundMessage;
  /** Set for a payload over mqtt.maxPayloadBytes: its size (the payload itself is not kept) and the requestId read from it. */
  tooLarge?: { bytes: number; requestId: string | undefined };
}

const REQUEST_ERROR_REASONS: Record<RequestError['code'], RejectionReason> = { NOT_JSON: 'not_json', TOO_DEEP: 'too_deeply_nested', PROTOTYPE_KEY: 'prototype_key', INVALID: 'schema' };

/** A response topic may name no wildcard or NUL (an answer to `+`/`#` would make the broker drop the agent). */
const RESPONSE_TOPIC = /^[^+#\u0000]{1,256}$/;
const ANSWER_TIMEOUT_MS = 10_000;
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/**
 * The provisioning protocol over MQTT: reads {prefix}/{deviceId}/request,
 * decides by policy, issues through the CA, and answers on
 * {prefix}/{deviceId}/response (or the MQTT 5 response topic). Every answer
 * leaves only after the state that explains it is durably committed. Bad
 * input is answered `rejected` (or dropped when it cannot be answered) and
 * changes nothing; the device's requests are handled one at a time.
 */
export class MqttEnrollment {
  private readonly queue: Work[] = [];
  readonly locks = new DeviceLocks();
  private active = 0;
  private readonly limiter: RateLimiter;
  private readonly metrics: EnrollmentMetrics;
  private idle: (() => void) | undefined;

  constructor(private readonly deps: EnrollmentDeps) {
    this.limiter = new RateLimiter(deps.config().limits);
    this.metrics = new EnrollmentMetrics(deps.metrics.registry, () => this.queue.length);
  }

  filters(): string[] {
    return [`${this.deps.config().topicPrefix}/+/request`];
  }

  reconfigure(): void {
    this.limiter.setLimits(this.deps.config().limits);
  }

  /** Resumes requests approved before a crash or restart: they are issued (or found issued) and answered. */
  async resume(): Promise<void> {
    for (const r of this.deps.enrollments().withStatus('approved')) {
      const name = r.deviceId.slice('mqtt:'.length);
      await this.locks.run(name, () => this.issue(r)).catch((err: unknown) => this.deps.log.error({ err, device: name, requestId: r.requestId }, 'approved request could not be resumed'));
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
    const work: Work = bytes > maxPayloadBytes ? { name, message: { ...message, payload: Buffer.alloc(0) }, tooLarge: { bytes, requestId: peekRequestId(message.payload) } } : { name, message };
    this.queue.push(work);
    log.debug({ device: name, queued: this.queue.length }, 'enrollment request queued');
    this.pump();
  }

  /** Resolves when nothing is queued or running (tests, stop). */
  drained(): Promise<void> {
    if (this.active === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => (this.idle = resolve));
  }

  private drop(reason: DropReason, fields: Record<string, unknown>): void {
    this.metrics.dropped(reason);
    this.deps.log.warn({ ...fields, reason }, 'enrollment message dropped');
  }

  /** Answers `rejected`, counted by reason and logged; nothing is recorded. */
  private refuse(reply: (answer: Answer) => Promise<void>, device: string, requestId: string | null, reason: RejectionReason, text: string): Promise<void> {
    this.metrics.rejected(reason);
    this.deps.log.warn({ device, requestId, code: reason, reason: text }, 'enrollment request refused');
    return reply({ requestId, status: 'rejected', reason: text });
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
        const reply = (answer: Answer) => this.answer(defaultTopic, message.correlationData, answer);
        return this.refuse(reply, name, null, 'response_topic', `the response topic must be ${defaultTopic} or below it, without wildcards, at most 256 characters`);
      }
      responseTopic = message.responseTopic;
    }
    const reply = (answer: Answer) => this.answer(responseTopic, message.correlationData, answer);
    if (tooLarge) {
      return this.refuse(reply, name, tooLarge.requestId ?? null, 'too_large', `request is ${tooLarge.bytes} bytes, over the limit of ${maxPayloadBytes} bytes (mqtt.maxPayloadBytes)`);
    }
    let request: EnrollmentRequestMessage;
    try {
      request = parseRequest(message.payload);
    } catch (err) {
      if (!(err instanceof RequestError)) throw err;
      return this.refuse(reply, name, err.requestId ?? null, REQUEST_ERROR_REASONS[err.code], err.message);
    }
    const device = this.deps.devices().byName('mqtt', name);
    const previous = this.deps.enrollments().get(`mqtt:${name}`, request.requestId);
    if (previous) {
      if (previous.csrSha256 !== sha256(request.csr.trim())) {
        return this.refuse(reply, name, request.requestId, 'request_id_reused', 'this requestId was already used with a different CSR; use a new requestId');
      }
      this.metrics.answered('repeated');
      return reply(this.currentAnswer(previous));
    }
    if (this.deps.reservedIds().includes(name)) {
      return this.refuse(reply, name, request.requestId, 'reserved_id', `${name} is reserved for the gateway itself; use another device id`);
    }
    let csr: ReturnType<typeof parseCsr>;
    try {
      csr = parseCsr(request.csr);
      verifyCsr(csr);
      if (csr.commonNames.length > 1) throw new CertError('REQUEST_INVALID', 'the CSR subject has more than one CN');
      const cn = csr.commonNames[0];
      if (cn !== undefined && cn !== name) throw new CertError('REQUEST_INVALID', `the CSR is for CN ${JSON.stringify(cn)}, not for device ${name}`);
      // The claim signature covers the CSR; with the device id in its CN it covers the id too.
      if (request.claim && cn !== name) throw new CertError('REQUEST_INVALID', `a request with a manufacturer claim needs a CSR whose CN is the device id ${name}`);
    } catch (err) {
      if (!(err instanceof CertError)) throw err;
      return this.refuse(reply, name, request.requestId, err.code.toLowerCase() as Lowercase<typeof err.code>, `${err.code}: ${err.message}`);
    }
    const decision = this.deps.policy().evaluate({
      device,
      nameplate: request.nameplate,
      csrDer: csr.der,
      ...(request.enrollmentToken !== undefined ? { enrollmentToken: request.enrollmentToken } : {}),
      ...(request.claim !== undefined ? { claim: request.claim } : {}),
    });
    if (decision.action === 'hold' && (device === undefined || device.state === 'discovered') && this.deps.enrollments().countWithStatus('pending') >= this.deps.config().limits.maxPending) {
      return this.refuse(reply, name, request.requestId, 'too_many_pending', 'too many requests are waiting for a technician; try again later');
    }
    if (decision.action === 'reject' && device === undefined) {
      // A device the inventory does not know, refused by policy: answered and logged, not recorded,
      // so that anonymous requests under ever new ids cannot grow the database.
      this.metrics.rejected('policy');
      this.deps.log.warn({ device: name, requestId: request.requestId, decidedBy: decision.decidedBy, reason: decision.reason }, 'enrollment request rejected by policy');
      return reply({ requestId: request.requestId, status: 'rejected', reason: decision.reason });
    }
    const record = this.record(name, device, request, csr.publicKey.sha256, decision, responseTopic === defaultTopic ? undefined : responseTopic, message.correlationData);
    this.deps.log.info({ device: name, requestId: request.requestId, status: record.status, decidedBy: record.decidedBy, reason: record.reason }, 'enrollment request decided');
    if (record.status === 'approved') return this.issue(record);
    if (record.status === 'rejected') this.metrics.rejected('policy');
    else this.metrics.answered('pending');
    return reply(this.currentAnswer(record));
  }

  /** Records the request and the device's new state in one commit; an approval by token counts the use there too. */
  private record(
    name: string,
    device: Device | undefined,
    request: EnrollmentRequestMessage,
    spkiSha256: string,
    decision: ReturnType<EnrollmentPolicy['evaluate']>,
    responseTopic: string | undefined,
    correlationData: Buffer | undefined,
  ): EnrollmentRequest {
    const store = this.deps.store();
    const enrollments = this.deps.enrollments();
    const commit = decision.action === 'approve' ? store.transaction.bind(store) : store.durable.bind(store);
    return commit(() => {
      let { action, reason } = decision;
      if (action === 'approve' && decision.tokenId !== undefined && !enrollments.useToken(decision.tokenId)) {
        action = 'reject';
        reason = `enrollment token ${decision.tokenId} was used up meanwhile`;
      }
      const status = action === 'approve' ? 'approved' : action === 'hold' ? 'pending' : 'rejected';
      const state = device?.state;
      // A provisioned or revoked device keeps its state (and its nameplate) until a certificate is issued:
      // an anonymous request must not change what the broker and the technicians rely on.
      const settled = state === 'provisioned' || state === 'revoked';
      const to = settled ? state : status === 'rejected' ? 'rejected' : 'pending';
      this.deps.devices().apply({
        protocol: 'mqtt',
        name,
        to,
        // Anyone on the provisioning listener can send a request under any id: it is no sign of the device
        // (a new record starts with its time). Last seen moves with an accepted request, when it is issued.
        seen: false,
        cause: `enrollment request ${request.requestId}: ${status} (${decision.decidedBy})`,
        actor: decision.decidedBy === 'technician' ? 'technician' : 'policy',
        details: { requestId: request.requestId, reason },
        patch: settled
          ? { ...(action === 'approve' ? { preapproved: false } : {}) }
          : {
              nameplate: request.nameplate,
              source: { protocol: 'mqtt', provisioning: `${this.deps.config().topicPrefix}/${name}` },
              reason,
              ...(action === 'approve' ? { preapproved: false } : {}),
            },
      });
      const row = {
        deviceId: `mqtt:${name}`,
        requestId: request.requestId,
        csrSha256: sha256(request.csr.trim()),
        spkiSha256,
        csr: request.csr,
        nameplate: request.nameplate,
        status,
        reason,
        decidedBy: decision.decidedBy,
        receivedAt: new Date(),
        ...(decision.tokenId !== undefined && action === 'approve' ? { tokenId: decision.tokenId } : {}),
        ...(responseTopic !== undefined ? { responseTopic } : {}),
        ...(correlationData !== undefined ? { correlationData } : {}),
      } as const;
      enrollments.insert(row);
      return enrollments.get(row.deviceId, row.requestId)!;
    });
  }

  /**
   * Issues for an approved request, records the outcome durably, opens the
   * broker to the device, then answers. Safe to run again after a crash: a
   * valid certificate for the same key issued after the request was received
   * is the one this request produced.
   */
  async issue(request: EnrollmentRequest): Promise<void> {
    const name = request.deviceId.slice('mqtt:'.length);
    const { ca, store } = this.deps;
    const key = parseCsr(request.csr).publicKey.sha256;
    const current = ca.current('mqtt-device', name);
    let serial: string;
    if (current && current.spkiSha256 === key && current.issuedAt >= request.receivedAt) {
      serial = current.serial;
    } else {
      try {
        serial = (await ca.issue({ profile: 'mqtt-device', identity: name, csr: request.csr, renew: current?.spkiSha256 === key })).record.serial;
      } catch (err) {
        if (!(err instanceof CertError)) throw err;
        const reason = `${err.code}: ${err.message}`;
        store().durable(() => {
          this.deps.enrollments().decide(request.deviceId, request.requestId, 'rejected', reason, request.decidedBy ?? 'policy');
          if (request.tokenId !== undefined) this.deps.enrollments().releaseToken(request.tokenId);
          const device = this.deps.devices().get(request.deviceId);
          if (device?.state === 'pending') {
            this.deps.devices().apply({ protocol: 'mqtt', name, to: 'rejected', seen: false, cause: `certificate refused: ${err.code}`, actor: 'ca', details: { requestId: request.requestId, reason }, patch: { reason } });
          }
        });
        this.deps.log.warn({ device: name, requestId: request.requestId, code: err.code, reason: err.message }, 'certificate refused for enrollment request');
        this.metrics.rejected(err.code.toLowerCase() as Lowercase<typeof err.code>);
        return this.answer(this.topicOf(request), request.correlationData, { requestId: request.requestId, status: 'rejected', reason });
      }
    }
    const stale = store().durable(() => {
      // Under the device lock nothing else changes the device meanwhile; this guards a state left by a crash.
      const still = this.deps.enrollments().get(request.deviceId, request.requestId);
      const device = this.deps.devices().get(request.deviceId);
      if (still?.status !== 'approved' || device?.state === 'decommissioned') return `request ${request.requestId} is ${still?.status ?? 'gone'}, device ${device?.state ?? 'gone'}`;
      this.deps.enrollments().decide(request.deviceId, request.requestId, 'issued', request.reason, request.decidedBy ?? 'policy', serial);
      this.deps.devices().apply({
        protocol: 'mqtt',
        name,
        to: 'provisioned',
        // An accepted request is a sign of the device: seen when it asked, not when a technician approved.
        seenAt: request.receivedAt,
        cause: `certificate ${serial} issued for request ${request.requestId}`,
        actor: request.decidedBy === 'technician' ? 'technician' : 'policy',
        details: { requestId: request.requestId, serial },
        patch: { certificateSerial: serial, blocked: false, preapproved: false, reason: request.reason, nameplate: request.nameplate },
      });
      return undefined;
    });
    if (stale !== undefined) {
      // Issued for nothing: revoke it before anyone can use it (it never left the process).
      ca.revoke(serial, 'cessationOfOperation');
      this.deps.log.warn({ device: name, requestId: request.requestId, serial, why: stale }, 'certificate issued for a request that was withdrawn meanwhile: revoked');
      return;
    }
    await this.deps.gate.restore(name).catch((err: unknown) => this.deps.log.error({ err, device: name }, 'broker access could not be restored; the device may be refused until the next ACL rewrite'));
    this.metrics.answered('issued');
    await this.answer(this.topicOf(request), request.correlationData, this.currentAnswer({ ...request, status: 'issued', certificateSerial: serial }));
  }

  /** Answers a request a technician's decision settled: a rejection is counted as one. */
  async answerRecorded(request: EnrollmentRequest): Promise<void> {
    if (request.status === 'rejected') this.metrics.rejected('technician');
    await this.answer(this.topicOf(request), request.correlationData, this.currentAnswer(request));
  }

  private topicOf(request: EnrollmentRequest): string {
    return request.responseTopic ?? `${this.deps.config().topicPrefix}/${request.deviceId.slice('mqtt:'.length)}/response`;
  }

  private currentAnswer(r: EnrollmentRequest): Answer {
    if (r.status === 'issued' && r.certificateSerial) {
      const cert = this.deps.ca.certificate(r.certificateSerial);
      if (!cert) return { requestId: r.requestId, status: 'rejected', reason: 'the certificate issued for this request is not on record' };
      if (cert.record.status !== 'valid') {
        const why = cert.record.status === 'revoked' ? 'was revoked' : 'was superseded by a later certificate; use that one or send a new request';
        return { requestId: r.requestId, status: 'rejected', reason: `certificate ${r.certificateSerial} ${why}` };
      }
      return { requestId: r.requestId, status: 'issued', certificate: cert.record.pem, caChain: cert.chain, brokerUrl: this.deps.brokerUrl() };
    }
    if (r.status === 'rejected') return { requestId: r.requestId, status: 'rejected', reason: r.reason };
    return { requestId: r.requestId, status: 'pending', reason: r.status === 'approved' ? 'approved; the certificate is being issued' : r.reason };
  }

  private async answer(topic: string, correlationData: Buffer | undefined, answer: Answer): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const sent = this.deps.link.publish(topic, Buffer.from(JSON.stringify(answer)), { qos: 1, ...(correlationData ? { correlationData } : {}) });
      const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no PUBACK within ${ANSWER_TIMEOUT_MS} ms`)), ANSWER_TIMEOUT_MS)));
      await Promise.race([sent, late]);
    } catch (err) {
      // The decision is on record: the device gets the same answer when it repeats the request.
      this.deps.log.warn({ err, topic, requestId: answer.requestId }, 'enrollment answer could not be published');
    } finally {
      clearTimeout(timer);
    }
  }
}
