import { CertError } from '../../certs/errors.js';
import { profileNamed } from '../../certs/profiles/index.js';
import { PreparedRequest } from '../../certs/request.js';
import { RefusedError } from '../errors.js';
import type { CaService } from '../ca/caService.js';
import type { IssuedCertificate } from '../../certs/authority.js';
import { failpoint } from '../failpoints.js';
import type { Device } from '../inventory/device.js';
import type { Logger } from '../log.js';
import type { DeviceRepository } from '../store/deviceRepository.js';
import type { EnrollmentRepository, EnrollmentRequest } from '../store/enrollmentRepository.js';
import type { Store } from '../store/database.js';
import type { AccessGate } from '../transport/types.js';
import type { EnrollmentMetrics, RejectionReason } from './enrollmentMetrics.js';
import type { Decision, EnrollmentPolicy } from './policy.js';
import type { EnrollmentRequestMessage } from './request.js';
import type { EnrollmentWitness } from './enrollmentWitness.js';
import { EnrollmentRecorder, PROTOCOL, sha256, type DecidedRequest, type ReplyTo } from './enrollmentRecord.js';

export type { ReplyTo };

/** What a device is told about its request, whatever carries it. */
export interface Answer {
  requestId: string | null;
  status: 'issued' | 'pending' | 'rejected';
  certificate?: string;
  caChain?: string[];
  brokerUrl?: string;
  reason?: string;
}

export interface EnrollmentFlowDeps {
  log: Logger;
  metrics: EnrollmentMetrics;
  store: Store;
  devices: DeviceRepository;
  enrollments: EnrollmentRepository;
  policy: () => EnrollmentPolicy;
  ca: CaService;
  gate: AccessGate;
  /** The provisioning address recorded as the device's source (`{prefix}/{deviceId}` over MQTT). */
  provisioning: (name: string) => string;
  /** Requests that may wait for a technician at once (mqtt.limits.maxPending). */
  maxPending: () => number;
  /** The mutual-TLS URL devices are told to use. */
  brokerUrl: () => string;
  /** Ids no device may enroll under: the agent's own (its CN on the broker), the broker's. */
  reservedIds: () => string[];
  /** The device report: told of each decided request (a revoked device asking again, an id another key holds). */
  witness?: EnrollmentWitness;
}

/** The outcome of an approved request was settled otherwise meanwhile: its certificate is not recorded. */
class Withdrawn extends RefusedError {}

/** The token that approved a request was used up by other requests meanwhile: the request is rejected, its certificate dropped. */
class TokenUsedUp extends RefusedError {}

const PROFILE = 'mqtt-device';

/**
 * Enrollment whatever the protocol that carries it: a request read by its
 * adapter (MQTT today; the configuration issue and later protocols reuse
 * this) is prepared once (CSR parsed, proof of possession verified), judged
 * by the mqtt-device profile's validators and the policy, recorded, and
 * issued from the prepared request. The certificate and the request's
 * outcome are recorded in one durable commit; every answer returned is
 * explained by committed state, so the adapter may deliver it at once. The
 * caller holds the device's lock.
 */
export class EnrollmentFlow {
  private readonly recorder: EnrollmentRecorder;

  constructor(private readonly deps: EnrollmentFlowDeps) {
    this.recorder = new EnrollmentRecorder(deps);
  }

  /** A refusal before anything is recorded: counted by reason, logged, answered. */
  refusal(device: string, requestId: string | null, reason: RejectionReason, text: string): Answer {
    this.deps.metrics.rejected(reason);
    this.deps.log.warn({ device, requestId, code: reason, reason: text }, 'enrollment request refused');
    return { requestId, status: 'rejected', reason: text };
  }

  /** Decides a request; the answer, or none when an issuance was withdrawn meanwhile (nothing to tell). */
  async submit(name: string, request: EnrollmentRequestMessage, replyTo: ReplyTo): Promise<Answer | undefined> {
    const device = this.deps.devices.byName(PROTOCOL, name);
    const previous = this.deps.enrollments.get(`${PROTOCOL}:${name}`, request.requestId);
    if (previous) {
      if (previous.csrSha256 !== sha256(request.csr.trim())) {
        return this.refusal(name, request.requestId, 'request_id_reused', 'this requestId was already used with a different CSR; use a new requestId');
      }
      this.deps.metrics.answered('repeated');
      return this.answerFor(previous);
    }
    if (this.deps.reservedIds().includes(name)) {
      return this.refusal(name, request.requestId, 'reserved_id', `${name} is reserved for the gateway itself; use another device id`);
    }
    let prepared: PreparedRequest;
    try {
      prepared = PreparedRequest.from(request.csr);
      profileNamed(PROFILE).validate?.(prepared, { identity: name, origin: 'requester' });
      // The claim signature covers the CSR; with the device id in its CN it covers the id too.
      if (request.claim && prepared.commonNames[0] !== name) {
        throw new CertError('REQUEST_INVALID', `a request with a manufacturer claim needs a CSR whose CN is the device id ${name}`);
      }
    } catch (err) {
      if (!(err instanceof CertError)) throw err;
      return this.refusal(name, request.requestId, err.code.toLowerCase() as Lowercase<typeof err.code>, `${err.code}: ${err.message}`);
    }
    const decision = this.deps.policy().evaluate({
      device,
      nameplate: request.nameplate,
      csrDer: prepared.der,
      ...(request.enrollmentToken !== undefined ? { enrollmentToken: request.enrollmentToken } : {}),
      ...(request.claim !== undefined ? { claim: request.claim } : {}),
    });
    this.deps.witness?.enrollmentRequest({ name, requestId: request.requestId, spkiSha256: prepared.spkiSha256, device, action: decision.action });
    if (
      decision.action === 'hold' &&
      (device === undefined || device.state === 'discovered') &&
      this.deps.enrollments.countWithStatus('pending') >= this.deps.maxPending()
    ) {
      return this.refusal(name, request.requestId, 'too_many_pending', 'too many requests are waiting for a technician; try again later');
    }
    if (decision.action === 'reject' && device === undefined) {
      // A device the inventory does not know, refused by policy: answered and logged, not recorded,
      // so that anonymous requests under ever new ids cannot grow the database.
      this.deps.metrics.rejected('policy');
      this.deps.log.warn(
        { device: name, requestId: request.requestId, decidedBy: decision.decidedBy, reason: decision.reason },
        'enrollment request rejected by policy',
      );
      return { requestId: request.requestId, status: 'rejected', reason: decision.reason };
    }
    if (decision.action === 'approve') return this.issueApproved(name, device, request, prepared, decision, replyTo);
    const record = this.recorder.record({ name, device, request, spkiSha256: prepared.spkiSha256, decision, replyTo, receivedAt: new Date() });
    this.decided(name, record);
    if (record.status === 'rejected') this.deps.metrics.rejected('policy');
    else this.deps.metrics.answered('pending');
    return this.answerFor(record);
  }

  private decided(name: string, r: EnrollmentRequest): void {
    this.deps.log.info({ device: name, requestId: r.requestId, status: r.status, decidedBy: r.decidedBy, reason: r.reason }, 'enrollment request decided');
  }

  /**
   * A request the policy approved: issued, and recorded (the request, the
   * device's change to provisioned, the token's use) inside the certificate's
   * own durable commit, which the CA groups with the other issuances of the
   * same turn of the event loop: one fsync for a burst of devices, and
   * nothing is recorded of a request whose certificate is not. A token used
   * up meanwhile, or a certificate the CA refuses, records the request as
   * rejected instead.
   */
  private async issueApproved(
    name: string,
    device: Device | undefined,
    request: EnrollmentRequestMessage,
    prepared: PreparedRequest,
    decision: Decision,
    replyTo: ReplyTo,
  ): Promise<Answer | undefined> {
    const { ca, log, devices, enrollments } = this.deps;
    const decided: DecidedRequest = { name, device, request, spkiSha256: prepared.spkiSha256, decision, replyTo, receivedAt: new Date() };
    const current = ca.current(PROFILE, name);
    let recorded: EnrollmentRequest | undefined;
    let issued: IssuedCertificate;
    try {
      issued = await ca.issue({
        profile: PROFILE,
        identity: name,
        csr: prepared,
        origin: 'requester',
        // The identity's certificate for this key was issued before this request arrived: renewed.
        renew: current?.spkiSha256 === prepared.spkiSha256,
        alongside: (record) => {
          // Read again inside the commit: what does not take the device's lock may have changed it meanwhile.
          const state = devices.stateOf(`${PROTOCOL}:${name}`);
          if (state === 'decommissioned' || enrollments.has(`${PROTOCOL}:${name}`, request.requestId)) {
            throw new Withdrawn(`request ${request.requestId}: device ${state ?? 'gone'}, or the request recorded meanwhile`);
          }
          recorded = this.recorder.write({ ...decided, device: state === undefined ? undefined : { state }, issuedSerial: record.serial });
          if (recorded.status !== 'issued') throw new TokenUsedUp(recorded.reason);
        },
      });
      failpoint('enrollment.issue.after-commit');
    } catch (err) {
      if (err instanceof Withdrawn) return this.withdrawn(name, request.requestId, err);
      const refused = err instanceof TokenUsedUp ? undefined : err instanceof CertError ? err : undefined;
      if (!(err instanceof TokenUsedUp) && !refused) throw err;
      // Recorded as rejected in a commit of its own; the certificate signed for it was never recorded nor handed out.
      const reason = refused ? `${refused.code}: ${refused.message}` : (err as TokenUsedUp).message;
      const rejected = this.recorder.record({
        ...decided,
        device: devices.get(`${PROTOCOL}:${name}`),
        decision: { ...decision, action: 'reject', reason },
        approvalSpent: true,
        ...(refused ? { by: { cause: `certificate refused: ${refused.code}`, actor: 'ca' } } : {}),
      });
      this.decided(name, rejected);
      if (refused) {
        log.warn({ device: name, requestId: request.requestId, code: refused.code, reason: refused.message }, 'certificate refused for enrollment request');
        this.deps.metrics.rejected(refused.code.toLowerCase() as Lowercase<typeof refused.code>);
      } else this.deps.metrics.rejected('policy');
      return this.answerFor(rejected);
    }
    this.decided(name, recorded!);
    await this.deps.gate
      .restore(name)
      .catch((err: unknown) => log.error({ err, device: name }, 'broker access could not be restored; the device may be refused until the next ACL rewrite'));
    this.deps.metrics.answered('issued');
    // The certificate in hand is the one on record, valid: no need to read it back.
    return { requestId: request.requestId, status: 'issued', certificate: issued.record.pem, caChain: issued.chain, brokerUrl: this.deps.brokerUrl() };
  }

  /**
   * Issues for an approved request (just decided, approved by a technician,
   * or found approved at start after a crash) and records the certificate
   * and the request's outcome in one durable commit, then opens the broker
   * to the device. Returns the answer, or undefined when the request was
   * settled otherwise meanwhile (nothing recorded, nothing to answer).
   */
  async issue(request: EnrollmentRequest, prepared?: PreparedRequest): Promise<Answer | undefined> {
    const name = request.deviceId.slice(`${PROTOCOL}:`.length);
    const { ca, log } = this.deps;
    let serial: string;
    try {
      // A request read back from the store is prepared again: the record keeps the CSR, not its reading.
      const csr = prepared ?? PreparedRequest.from(request.csr);
      const current = ca.current(PROFILE, name);
      // The identity's certificate for this key, issued after this request arrived, answers it (a twin
      // request was issued meanwhile): the CA hands it out again. An older one is renewed.
      const renew = current?.spkiSha256 === csr.spkiSha256 && current.issuedAt < request.receivedAt;
      const issued = await ca.issue({
        profile: PROFILE,
        identity: name,
        csr,
        origin: 'requester',
        renew,
        alongside: (record) => this.settle(request, record.serial),
      });
      serial = issued.record.serial;
      // The certificate and the request's outcome are on disk together; nothing has left the process.
      failpoint('enrollment.issue.after-commit');
    } catch (err) {
      if (err instanceof Withdrawn) return this.withdrawn(name, request.requestId, err);
      if (!(err instanceof CertError)) throw err;
      return this.refused(request, name, err);
    }
    await this.deps.gate
      .restore(name)
      .catch((err: unknown) => log.error({ err, device: name }, 'broker access could not be restored; the device may be refused until the next ACL rewrite'));
    this.deps.metrics.answered('issued');
    return this.answerFor({ ...request, status: 'issued', certificateSerial: serial });
  }

  /** Signed, never recorded, never handed out: as if it had not been issued; nothing to answer. */
  private withdrawn(name: string, requestId: string, err: Withdrawn): undefined {
    this.deps.log.warn({ device: name, requestId, why: err.message }, 'certificate issued for a request that was withdrawn meanwhile: not recorded');
    return undefined;
  }

  /** Inside the certificate's commit: the request's outcome and the device's state, or Withdrawn. */
  private settle(request: EnrollmentRequest, serial: string): void {
    // Under the device lock nothing else changes the device meanwhile; this guards against what does not take it.
    const still = this.deps.enrollments.get(request.deviceId, request.requestId);
    const device = this.deps.devices.get(request.deviceId);
    if (still?.status !== 'approved' || device?.state === 'decommissioned') {
      throw new Withdrawn(`request ${request.requestId} is ${still?.status ?? 'gone'}, device ${device?.state ?? 'gone'}`);
    }
    this.deps.enrollments.decide(request.deviceId, request.requestId, 'issued', request.reason, request.decidedBy ?? 'policy', serial);
    this.provisioned(request, serial);
  }

  /** The device provisioned with its certificate, inside the certificate's commit. */
  private provisioned(request: EnrollmentRequest, serial: string): void {
    const name = request.deviceId.slice(`${PROTOCOL}:`.length);
    this.deps.devices.change({
      protocol: PROTOCOL,
      name,
      to: 'provisioned',
      // An accepted request is a sign of the device: seen when it asked, not when a technician approved.
      seenAt: request.receivedAt,
      cause: `certificate ${serial} issued for request ${request.requestId}`,
      actor: request.decidedBy === 'technician' ? 'technician' : 'policy',
      details: { requestId: request.requestId, serial },
      patch: { certificateSerial: serial, blocked: false, preapproved: false, reason: request.reason, nameplate: request.nameplate },
    });
  }

  /** The CA refused an approved request: recorded as rejected (its token use given back), counted, answered. */
  private refused(request: EnrollmentRequest, name: string, err: CertError): Answer {
    const reason = `${err.code}: ${err.message}`;
    this.deps.store.durable(() => {
      this.deps.enrollments.decide(request.deviceId, request.requestId, 'rejected', reason, request.decidedBy ?? 'policy');
      if (request.tokenId !== undefined) this.deps.enrollments.releaseToken(request.tokenId);
      const device = this.deps.devices.get(request.deviceId);
      if (device?.state === 'pending') {
        this.deps.devices.change({
          protocol: PROTOCOL,
          name,
          to: 'rejected',
          seen: false,
          cause: `certificate refused: ${err.code}`,
          actor: 'ca',
          details: { requestId: request.requestId, reason },
          patch: { reason },
        });
      }
    });
    this.deps.log.warn({ device: name, requestId: request.requestId, code: err.code, reason: err.message }, 'certificate refused for enrollment request');
    this.deps.metrics.rejected(err.code.toLowerCase() as Lowercase<typeof err.code>);
    return { requestId: request.requestId, status: 'rejected', reason };
  }

  /** The answer a recorded request stands at. */
  answerFor(r: EnrollmentRequest): Answer {
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
}
