import type { CaService } from '../ca/caService.js';
import type { Logger } from '../log.js';
import type { ActionRepository, DeviceAction } from '../store/actionRepository.js';
import type { Store } from '../store/database.js';
import type { DeviceRepository } from '../store/deviceRepository.js';
import type { EnrollmentRepository } from '../store/enrollmentRepository.js';
import type { AccessGate, MqttEnrollment } from './mqttEnrollment.js';

export interface DeviceActionsDeps {
  log: Logger;
  store: Store;
  actions: ActionRepository;
  devices: DeviceRepository;
  enrollments: EnrollmentRepository;
  ca: CaService;
  enrollment: MqttEnrollment;
  gate: AccessGate;
}

export class ActionRefused extends Error {}

/**
 * Carries out technicians' decisions queued in device_actions (by the CLI
 * now, the local API later), one at a time, in order. Each outcome is
 * recorded on the action; a refused action (say, approving a device that has
 * nothing to approve) is an outcome too, not a crash.
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
    for (const action of this.deps.actions.open()) {
      let outcome: string;
      let error: string | undefined;
      try {
        outcome = await this.apply(action);
      } catch (err) {
        outcome = 'refused';
        error = (err as Error).message;
        if (!(err instanceof ActionRefused)) this.deps.log.error({ err, action: action.id }, 'device action failed');
      }
      this.deps.actions.finish(action.id, outcome, error);
      this.deps.log.info({ action: action.action, device: action.deviceId, actor: action.actor, outcome, error }, 'device action done');
    }
  }

  private async apply(a: DeviceAction): Promise<string> {
    const { devices, enrollments, store } = this.deps;
    const device = devices.get(a.deviceId);
    if (!device) throw new ActionRefused(`no device ${a.deviceId} in the inventory`);
    if (device.protocol !== 'mqtt') throw new ActionRefused(`${a.action} of ${device.protocol} devices is not available yet`);
    const actor = `technician:${a.actor}`;
    const pending = enrollments.withStatus('pending', device.id);
    const why = a.reason ? `: ${a.reason}` : '';

    if (a.action === 'approve') {
      if (device.state === 'decommissioned') throw new ActionRefused(`${device.id} is decommissioned`);
      const latest = pending.at(-1);
      if (!latest) {
        if (device.state === 'provisioned') throw new ActionRefused(`${device.id} is provisioned and has no request waiting`);
        store.durable(() =>
          devices.apply({ protocol: 'mqtt', name: device.name, to: device.state, cause: `approved in advance by ${a.actor}${why}`, actor, patch: { preapproved: true, blocked: false } }),
        );
        return 'preapproved';
      }
      store.transaction(() => {
        for (const older of pending.slice(0, -1)) enrollments.decide(device.id, older.requestId, 'rejected', 'superseded by a later request of the same device', actor);
        enrollments.decide(device.id, latest.requestId, 'approved', `approved by ${a.actor}${why}`, 'technician');
        devices.apply({ protocol: 'mqtt', name: device.name, to: device.state === 'provisioned' ? 'provisioned' : 'pending', cause: `request ${latest.requestId} approved by ${a.actor}${why}`, actor, patch: { blocked: false } });
      });
      for (const older of pending.slice(0, -1)) await this.deps.enrollment.answerRecorded(enrollments.get(device.id, older.requestId)!);
      await this.deps.enrollment.issue(enrollments.get(device.id, latest.requestId)!);
      return 'issued';
    }

    if (a.action === 'reject') {
      if (device.state === 'provisioned' && pending.length === 0) throw new ActionRefused(`${device.id} is provisioned; revoke it instead`);
      if (device.state === 'decommissioned') throw new ActionRefused(`${device.id} is decommissioned`);
      const reason = `rejected by ${a.actor}${why}`;
      store.durable(() => {
        for (const r of pending) enrollments.decide(device.id, r.requestId, 'rejected', reason, actor);
        const to = device.state === 'provisioned' || device.state === 'revoked' ? device.state : 'rejected';
        devices.apply({ protocol: 'mqtt', name: device.name, to, cause: reason, actor, patch: { blocked: true, preapproved: false, reason } });
      });
      for (const r of pending) await this.deps.enrollment.answerRecorded(enrollments.get(device.id, r.requestId)!);
      return 'rejected';
    }

    // revoke, decommission
    if (a.action === 'revoke' && device.state !== 'provisioned') throw new ActionRefused(`${device.id} is ${device.state}, not provisioned`);
    if (device.state === 'decommissioned') throw new ActionRefused(`${device.id} is already decommissioned`);
    const serial = device.certificateSerial;
    const certificate = serial ? this.deps.ca.certificate(serial) : undefined;
    // The revocation is durable (and the CRL rewritten) before the device state says so.
    if (certificate && certificate.record.status === 'valid') this.deps.ca.revoke(certificate.record.serial, a.action === 'revoke' ? 'unspecified' : 'cessationOfOperation');
    const reason = `${a.action === 'revoke' ? 'revoked' : 'decommissioned'} by ${a.actor}${why}`;
    store.durable(() => {
      for (const r of pending) enrollments.decide(device.id, r.requestId, 'rejected', reason, actor);
      devices.apply({
        protocol: 'mqtt',
        name: device.name,
        to: a.action === 'revoke' ? 'revoked' : 'decommissioned',
        cause: reason,
        actor,
        details: serial ? { serial } : {},
        patch: { blocked: true, preapproved: false, reason },
      });
    });
    await this.deps.gate.cutOff(device.name);
    for (const r of pending) await this.deps.enrollment.answerRecorded(enrollments.get(device.id, r.requestId)!);
    return a.action === 'revoke' ? 'revoked' : 'decommissioned';
  }
}
