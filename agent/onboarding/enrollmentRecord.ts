import { createHash } from 'node:crypto';
import type { Device } from '../inventory/device.js';
import type { DeviceRepository } from '../store/deviceRepository.js';
import type { EnrollmentRepository, EnrollmentRequest, RequestStatus } from '../store/enrollmentRepository.js';
import type { Store } from '../store/database.js';
import type { Decision } from './policy.js';
import type { EnrollmentRequestMessage } from './request.js';

/** Where a protocol sends the answer of a recorded request (kept with it, for a later decision). */
export interface ReplyTo {
  responseTopic?: string;
  correlationData?: Buffer;
}

/** One decided request to record, with the device it came from as read inside the commit. */
export interface DecidedRequest {
  name: string;
  /** The device's record (its state is what counts), as read inside the commit when it is issued. */
  device: Pick<Device, 'state'> | undefined;
  request: EnrollmentRequestMessage;
  spkiSha256: string;
  decision: Decision;
  replyTo: ReplyTo;
  receivedAt: Date;
  /** The certificate an approval is issued with, in this same commit: recorded issued at once, the device provisioned. */
  issuedSerial?: string;
  /**
   * The policy approved the request, which then ended rejected (the CA
   * refused the certificate, the token was used up): a technician's
   * pre-approval is used up all the same, and the token presented is named.
   */
  approvalSpent?: boolean;
  /** Who and what the device's history names, instead of the decision (the CA's refusal). */
  by?: { cause: string; actor: string };
}

export const PROTOCOL = 'mqtt';
export const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/**
 * The writes of a decided enrollment request: the request's row, the use of
 * its token and the device's change (through pending, or straight to
 * provisioned when its certificate is issued in the same commit). Runs
 * inside the caller's transaction (write) or one durable commit of its own
 * (record).
 */
export class EnrollmentRecorder {
  constructor(
    private readonly deps: {
      store: Store;
      devices: DeviceRepository;
      enrollments: EnrollmentRepository;
      /** The provisioning address recorded as the device's source. */
      provisioning: (name: string) => string;
    },
  ) {}

  /** Records a request in one durable commit (a hold, a rejection). */
  record(r: DecidedRequest): EnrollmentRequest {
    return this.deps.store.durable(() => this.write(r));
  }

  /** The writes of a decided request, inside the caller's transaction; an approval by token counts the use here. */
  write(r: DecidedRequest): EnrollmentRequest {
    const { enrollments, devices } = this.deps;
    const { name, device, request, decision, issuedSerial } = r;
    let { action, reason } = decision;
    if (action === 'approve' && decision.tokenId !== undefined && !enrollments.useToken(decision.tokenId)) {
      action = 'reject';
      reason = `enrollment token ${decision.tokenId} was used up meanwhile`;
    }
    const status: RequestStatus = action === 'approve' ? 'approved' : action === 'hold' ? 'pending' : 'rejected';
    const spent = action === 'approve' || r.approvalSpent === true;
    const state = device?.state;
    // A provisioned or revoked device keeps its state (and its nameplate) until a certificate is issued:
    // an anonymous request must not change what the broker and the technicians rely on.
    const settled = state === 'provisioned' || state === 'revoked';
    // Approved and issued in one commit: one change of the device, straight to provisioned.
    const issued = status === 'approved' && issuedSerial !== undefined;
    const source = { protocol: PROTOCOL, provisioning: this.deps.provisioning(name) };
    const actor = r.by?.actor ?? (decision.decidedBy === 'technician' ? 'technician' : 'policy');
    if (issued) {
      devices.change({
        protocol: PROTOCOL,
        name,
        to: 'provisioned',
        // An accepted request is a sign of the device: seen when it asked.
        seenAt: r.receivedAt,
        cause: `enrollment request ${request.requestId} approved (${decision.decidedBy}): certificate ${issuedSerial} issued`,
        actor,
        details: { requestId: request.requestId, reason, serial: issuedSerial },
        patch: {
          certificateSerial: issuedSerial,
          blocked: false,
          preapproved: false,
          reason,
          nameplate: request.nameplate,
          ...(settled ? {} : { source }),
        },
      });
    } else {
      devices.change({
        protocol: PROTOCOL,
        name,
        to: settled ? state : status === 'rejected' ? 'rejected' : 'pending',
        // Anyone on the provisioning listener can send a request under any id: it is no sign of the device
        // (a new record starts with its time). Last seen moves with an accepted request, when it is issued.
        seen: false,
        cause: r.by?.cause ?? `enrollment request ${request.requestId}: ${status} (${decision.decidedBy})`,
        actor,
        details: { requestId: request.requestId, reason },
        patch: settled
          ? { ...(spent ? { preapproved: false } : {}) }
          : { nameplate: request.nameplate, source, reason, ...(spent ? { preapproved: false } : {}) },
      });
    }
    return enrollments.insert({
      deviceId: `${PROTOCOL}:${name}`,
      requestId: request.requestId,
      csrSha256: sha256(request.csr.trim()),
      spkiSha256: r.spkiSha256,
      csr: request.csr,
      nameplate: request.nameplate,
      ...(issued ? { status: 'issued' as const, certificateSerial: issuedSerial } : { status }),
      reason,
      decidedBy: decision.decidedBy,
      receivedAt: r.receivedAt,
      ...(decision.tokenId !== undefined && spent ? { tokenId: decision.tokenId } : {}),
      ...(r.replyTo.responseTopic !== undefined ? { responseTopic: r.replyTo.responseTopic } : {}),
      ...(r.replyTo.correlationData !== undefined ? { correlationData: r.replyTo.correlationData } : {}),
    });
  }
}
