import type { CaService } from '../ca/caService.js';
import type { Config } from '../config/schema.js';
import { RefusedError } from '../errors.js';
import type { EventBus } from '../events.js';
import type { Device } from '../inventory/device.js';
import type { Logger } from '../log.js';
import { crlReasonOf, decisionText, type ActionRepository, type DeviceAction } from '../store/actionRepository.js';
import type { Store } from '../store/database.js';
import type { DeviceRepository } from '../store/deviceRepository.js';
import type { PushRepository } from '../store/pushRepository.js';
import { carryOut } from './deviceActions.js';
import type { DeviceLocks } from './deviceLocks.js';
import { approvingRule, opcuaSource } from './opcuaPolicy.js';

export interface OpcuaActionsDeps {
  log: Logger;
  config: () => Config['opcua']['push'];
  store: Store;
  actions: ActionRepository;
  devices: DeviceRepository;
  pushes: PushRepository;
  ca: CaService;
  locks: DeviceLocks;
  /** Where each outcome is told (action.done, device.changed) once it is recorded. */
  bus?: Pick<EventBus, 'emit'>;
}

/**
 * Who approves an OPC UA server for push provisioning: the
 * opcua.push.approve rules, for servers discovery found and nobody
 * rejected; and technicians, whose decisions (devices approve, reject,
 * revoke, decommission on an `opcua:` device) are queued in the database
 * and carried out here, each under the device's lock so that it never
 * interleaves with a push of the same server.
 */
export class OpcuaActions {
  private running: Promise<void> | undefined;

  constructor(private readonly deps: OpcuaActionsDeps) {}

  /** Approves every discovered, unblocked server without a push job that a rule matches; returns how many. */
  approveByPolicy(): number {
    const { devices, pushes, store, log } = this.deps;
    let approved = 0;
    for (const device of devices.list({ protocol: 'opcua', state: 'discovered' })) {
      // A technician's decision waiting for this server goes first: a rule never overtakes it.
      if (device.blocked || pushes.get(device.id) || this.deps.actions.hasOpen(device.id)) continue;
      const rule = approvingRule(this.deps.config(), device);
      const source = opcuaSource(device);
      if (!rule || !source) continue;
      store.durable(() => this.approve(device, `policy`, `approved by ${rule}`));
      log.info({ device: device.id, rule }, 'OPC UA server approved for push provisioning by policy');
      approved += 1;
    }
    return approved;
  }

  /** Runs every open action on OPC UA devices; concurrent calls share one pass. */
  runOpen(): Promise<void> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  /** Each device's actions in order; devices side by side, so a push in flight holds up only its own server's. */
  private async pass(): Promise<void> {
    const byDevice = new Map<string, DeviceAction[]>();
    for (const action of this.deps.actions.open('opcua')) byDevice.set(action.deviceId, [...(byDevice.get(action.deviceId) ?? []), action]);
    await Promise.all(
      [...byDevice.values()].map(async (list) => {
        for (const action of list)
          await carryOut(action, () => this.deps.locks.run(action.deviceId, async () => this.apply(action)), this.deps.actions, this.deps.log, this.deps.bus);
      }),
    );
  }

  private apply(a: DeviceAction): string {
    const { devices, pushes, store, ca } = this.deps;
    const device = devices.get(a.deviceId);
    if (!device) throw new RefusedError(`no device ${a.deviceId} in the inventory`);
    if (a.requestId !== undefined) throw new RefusedError('OPC UA servers have no enrollment requests: approve without --request');
    if (device.state === 'decommissioned') throw new RefusedError(`${device.id} is decommissioned`);
    const text = decisionText(a);
    const why = text ? `: ${text}` : '';
    const actor = `technician:${a.actor}`;
    const job = pushes.get(device.id);
    if (a.action === 'approve') {
      if (!opcuaSource(device)) throw new RefusedError(`${device.id} has no endpoint recorded; run a discovery first`);
      // Already approved and not stopped: a second approval of the same decision changes nothing.
      if (job && job.status !== 'stopped' && !device.blocked && job.approvedBy === actor && job.updatedAt >= a.requestedAt) return 'approved';
      store.durable(() => this.approve(device, actor, `approved for push provisioning by ${a.actor}${why}`));
      return device.state === 'provisioned' ? 'approved (the server is checked again; its certificate is renewed when due)' : 'approved (push queued)';
    }
    if (a.action === 'reject') {
      if (device.state === 'provisioned') throw new RefusedError(`${device.id} is provisioned; revoke it instead`);
      if (device.state === 'rejected' && device.blocked) return 'rejected';
      const reason = `rejected by ${a.actor}${why}`;
      store.durable(() => {
        if (job) pushes.finish(device.id, 'stopped', reason);
        devices.apply({ protocol: 'opcua', name: device.name, to: 'rejected', cause: reason, actor, patch: { blocked: true, reason }, seen: false });
      });
      // A certificate an interrupted push issued and the server never applied goes with the decision.
      if (job?.serial && job.serial !== job.appliedSerial && ca.unrevoked('opcua-application', job.applicationUri).some((r) => r.serial === job.serial))
        ca.revoke(job.serial, 'superseded');
      return 'rejected';
    }
    const done = a.action === 'revoke' ? 'revoked' : 'decommissioned';
    if (device.state === done) return done;
    if (a.action === 'revoke' && device.state !== 'provisioned') throw new RefusedError(`${device.id} is ${device.state}, not provisioned`);
    const uri = opcuaSource(device)?.applicationUri ?? job?.applicationUri;
    // Every certificate of the server still good: the one it presents, one a renewal superseded or issued and never applied, an exported one.
    const serials = uri ? ca.unrevoked('opcua-application', uri).map((r) => r.serial) : [];
    // keyCompromise revokes every certificate of the key at once: those are not revoked twice.
    const revoked = new Set<string>();
    for (const serial of serials) if (!revoked.has(serial)) for (const r of ca.revoke(serial, crlReasonOf(a))) revoked.add(r.serial);
    const reason = `${done} by ${a.actor}${why}`;
    store.durable(() => {
      if (job) pushes.finish(device.id, 'stopped', reason);
      devices.apply({
        protocol: 'opcua',
        name: device.name,
        to: done,
        cause: reason,
        actor,
        details: { serials },
        patch: { blocked: true, reason },
        seen: false,
      });
    });
    // The server keeps presenting the certificate until someone replaces it: clients that check our CRL refuse it.
    return serials.length > 0
      ? `${done} (certificate${serials.length > 1 ? 's' : ''} ${serials.join(', ')} revoked; ` +
          'the server still presents its certificate to clients that do not check the CRL)'
      : done;
  }

  /** Records an approval (inside the caller's transaction): a push job due now, and the server pending unless provisioned. */
  private approve(device: Device, approvedBy: string, cause: string): void {
    const source = opcuaSource(device)!;
    this.deps.pushes.approve(device.id, source.applicationUri, approvedBy, source.certificateThumbprint, cause);
    const to = device.state === 'provisioned' ? 'provisioned' : 'pending';
    // A decision about the server, no sign of it: last seen stays.
    this.deps.devices.apply({ protocol: 'opcua', name: device.name, to, cause, actor: approvedBy, patch: { blocked: false, reason: null }, seen: false });
  }
}
