import type { CaService } from '../ca/caService.js';
import { RefusedError } from '../errors.js';
import type { EventBus } from '../events.js';
import type { Device } from '../inventory/device.js';
import type { Logger } from '../log.js';
import { crlReasonOf, decisionText, type ActionRepository, type DeviceAction } from '../store/actionRepository.js';
import type { Store } from '../store/database.js';
import type { DeviceRepository } from '../store/deviceRepository.js';
import type { EnrollmentRepository, EnrollmentRequest } from '../store/enrollmentRepository.js';
import type { AccessGate } from '../transport/types.js';
import type { MqttEnrollment } from './mqttEnrollment.js';

export interface DeviceActionsDeps {
  log: Logger;
  store: Store;
  actions: ActionRepository;
  devices: DeviceRepository;
  enrollments: EnrollmentRepository;
  ca: CaService;
  enrollment: MqttEnrollment;
  gate: AccessGate;
  /** Where each outcome is told (action.done, device.changed) once it is recorded. */
  bus?: Pick<EventBus, 'emit'>;
}

/**
 * Carries out technicians' decisions queued in device_actions (by the CLI
 * now, the local API later), in order, each under the device's lock so it
 * never interleaves with an enrollment of the same device. An action that
 * finds its work already done (it ran before a crash, before its outcome was
 * recorded) reports that outcome again; one that does not apply is refused
 * with the reason. A decision is no sign of the device: it leaves last seen alone.
 */
export class DeviceActions {
  private running: Promise<void> | undefined;

  constructor(private readonly deps: DeviceActionsDeps) {}

  /** Runs every open action; concurrent calls share one pass. */
  runOpen(): Promise<void> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<void> {
    for (const action of this.deps.actions.open('mqtt')) {
      const name = action.deviceId.slice(action.deviceId.indexOf(':') + 1);
      await carryOut(action, () => this.deps.enrollment.locks.run(name, () => this.apply(action)), this.deps.actions, this.deps.log, this.deps.bus);
    }
  }

  private async apply(a: DeviceAction): Promise<string> {
    const device = this.deps.devices.get(a.deviceId);
    if (!device) throw new RefusedError(`no device ${a.deviceId} in the inventory`);
    if (a.action === 'approve') return this.approve(a, device);
    if (a.action === 'reject') return this.reject(a, device);
    return this.revoke(a, device);
  }

  private open(device: Device): EnrollmentRequest[] {
    return [...this.deps.enrollments.withStatus('pending', device.id), ...this.deps.enrollments.withStatus('approved', device.id)];
  }

  private async approve(a: DeviceAction, device: Device): Promise<string> {
    const { devices, enrollments, store } = this.deps;
    const why = a.reason ? `: ${a.reason}` : '';
    if (device.state === 'decommissioned') throw new RefusedError(`${device.id} is decommissioned`);
    const pending = enrollments.withStatus('pending', device.id);
    let chosen: EnrollmentRequest | undefined;
    if (a.requestId !== undefined) {
      chosen = enrollments.get(device.id, a.requestId);
      if (!chosen) throw new RefusedError(`${device.id} has no request ${a.requestId}`);
      if (chosen.status === 'issued' && chosen.decidedBy === 'technician') return 'issued';
      if (chosen.status !== 'pending') throw new RefusedError(`request ${a.requestId} of ${device.id} is ${chosen.status}, not waiting`);
    } else if (pending.length > 0) {
      const keys = new Set(pending.map((r) => r.spkiSha256));
      // Anyone can send a request under any id: approving "the latest" could certify a key slipped in after the technician looked.
      if (keys.size > 1)
        throw new RefusedError(
          `${device.id} has ${pending.length} requests waiting with different keys; choose one with --request (edge-agent devices show ${device.name})`,
        );
      chosen = pending.at(-1);
    }
    if (!chosen) {
      if (device.preapproved) return 'preapproved';
      const last = enrollments.withStatus('issued', device.id).at(-1);
      if (device.state === 'provisioned' && last?.decidedBy === 'technician' && last.decidedAt !== undefined && last.decidedAt >= a.requestedAt)
        return 'issued';
      if (device.state === 'provisioned') throw new RefusedError(`${device.id} is provisioned and has no request waiting`);
      store.durable(() =>
        devices.apply({
          protocol: 'mqtt',
          name: device.name,
          to: device.state,
          cause: `approved in advance by ${a.actor}${why}`,
          actor: `technician:${a.actor}`,
          seen: false,
          patch: { preapproved: true, blocked: false },
        }),
      );
      return 'preapproved';
    }
    const others = pending.filter((r) => r.requestId !== chosen.requestId);
    store.durable(() => {
      for (const r of others)
        enrollments.decide(device.id, r.requestId, 'rejected', `not approved: the technician approved request ${chosen.requestId}`, `technician:${a.actor}`);
      enrollments.decide(device.id, chosen.requestId, 'approved', `approved by ${a.actor}${why}`, 'technician');
      const to = device.state === 'provisioned' || device.state === 'revoked' ? device.state : 'pending';
      devices.apply({
        protocol: 'mqtt',
        name: device.name,
        to,
        cause: `request ${chosen.requestId} approved by ${a.actor}${why}`,
        actor: `technician:${a.actor}`,
        seen: false,
        details: { spkiSha256: chosen.spkiSha256 },
        patch: { blocked: false },
      });
    });
    for (const r of others) await this.deps.enrollment.answerRecorded(enrollments.get(device.id, r.requestId)!);
    await this.deps.enrollment.issue(enrollments.get(device.id, chosen.requestId)!);
    const after = enrollments.get(device.id, chosen.requestId)!;
    if (after.status !== 'issued') throw new RefusedError(`request ${chosen.requestId} was approved but the CA refused it: ${after.reason}`);
    return 'issued';
  }

  private async reject(a: DeviceAction, device: Device): Promise<string> {
    const { devices, enrollments, store } = this.deps;
    const open = this.open(device);
    if (device.state === 'decommissioned') throw new RefusedError(`${device.id} is decommissioned`);
    if (open.length === 0 && device.state === 'rejected' && device.blocked) return 'rejected';
    if (device.state === 'provisioned' && open.length === 0)
      throw new RefusedError(`${device.id} is provisioned and has no request waiting; revoke it instead`);
    const reason = `rejected by ${a.actor}${a.reason ? `: ${a.reason}` : ''}`;
    store.durable(() => {
      for (const r of open) enrollments.decide(device.id, r.requestId, 'rejected', reason, `technician:${a.actor}`);
      // A provisioned device keeps its certificate and its access; only its waiting request is refused.
      const settled = device.state === 'provisioned' || device.state === 'revoked';
      devices.apply({
        protocol: 'mqtt',
        name: device.name,
        to: settled ? device.state : 'rejected',
        cause: reason,
        actor: `technician:${a.actor}`,
        seen: false,
        patch: { blocked: true, preapproved: false, ...(settled ? {} : { reason }) },
      });
    });
    for (const r of open) await this.deps.enrollment.answerRecorded(enrollments.get(device.id, r.requestId)!);
    return 'rejected';
  }

  /** revoke and decommission: every valid certificate of the identity is revoked before the state says so. */
  private async revoke(a: DeviceAction, device: Device): Promise<string> {
    const { devices, enrollments, store, ca } = this.deps;
    const kind = a.action as 'revoke' | 'decommission';
    const done = kind === 'revoke' ? 'revoked' : 'decommissioned';
    if (device.state === done) return done;
    if (device.state === 'decommissioned') throw new RefusedError(`${device.id} is decommissioned`);
    if (kind === 'revoke' && device.state !== 'provisioned') throw new RefusedError(`${device.id} is ${device.state}, not provisioned`);
    const current = ca.current('mqtt-device', device.name);
    if (current) ca.revoke(current.serial, crlReasonOf(a));
    const open = this.open(device);
    const text = decisionText(a);
    const reason = `${done} by ${a.actor}${text ? `: ${text}` : ''}`;
    store.durable(() => {
      for (const r of open) enrollments.decide(device.id, r.requestId, 'rejected', reason, `technician:${a.actor}`);
      devices.apply({
        protocol: 'mqtt',
        name: device.name,
        to: done,
        cause: reason,
        actor: `technician:${a.actor}`,
        seen: false,
        details: current ? { serial: current.serial } : {},
        patch: { blocked: true, preapproved: false, reason },
      });
    });
    for (const r of open) await this.deps.enrollment.answerRecorded(enrollments.get(device.id, r.requestId)!);
    try {
      await this.deps.gate.cutOff(device.name);
    } catch (err) {
      // The revocation stands (the CRL has it); the broker learns it at the next ACL rewrite or restart.
      this.deps.log.error({ err, device: device.id }, 'the broker could not be told to cut the device off');
      return `${done} (the broker could not be told at once: ${(err as Error).message})`;
    }
    return done;
  }
}

/**
 * Carries out one queued technician decision and records its outcome: a
 * RefusedError is the technician's answer ("refused" with the reason), any
 * other error is also logged as a fault.
 */
export async function carryOut(
  action: DeviceAction,
  run: () => Promise<string>,
  actions: ActionRepository,
  log: Logger,
  bus?: Pick<EventBus, 'emit'>,
): Promise<void> {
  let outcome: string;
  let error: string | undefined;
  try {
    outcome = await run();
  } catch (err) {
    outcome = 'refused';
    error = (err as Error).message;
    if (!(err instanceof RefusedError)) log.error({ err, action: action.id }, 'device action failed');
  }
  actions.finish(action.id, outcome, error);
  log.info({ action: action.action, device: action.deviceId, actor: action.actor, outcome, error }, 'device action done');
  // After the outcome is recorded: whoever waits reads it from the table. (What the decision changed in the
  // device's record was told as device.changed by the device repository, after its commit.)
  bus?.emit('action.done', { actionId: action.id, deviceId: action.deviceId, outcome });
}
