import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { verifyCsr, parseCsr } from '../../certs/x509/csr.js';
import type { CertificateRecord } from '../../certs/store.js';
import type { CaService } from '../ca/caService.js';
import type { Config } from '../config/schema.js';
import type { EventBus } from '../events.js';
import { failpoint } from '../failpoints.js';
import type { Device } from '../inventory/device.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import type { DeviceRepository } from '../store/deviceRepository.js';
import type { PushJob, PushRepository, PushStatus, PushStep } from '../store/pushRepository.js';
import { thumbprintOf, type OpcuaPushSessions } from '../transport/opcuaPushSession.js';
import type { DeviceLocks } from './deviceLocks.js';
import { opcuaSource, securityAdminFor } from './opcuaPolicy.js';

export interface OpcuaPushDeps {
  log: Logger;
  config: () => Config['opcua']['push'];
  organization: () => string;
  store: Store;
  devices: DeviceRepository;
  pushes: PushRepository;
  ca: CaService;
  sessions: OpcuaPushSessions;
  locks: DeviceLocks;
  bus: EventBus;
}

/** Ends an attempt with a status other than failed-and-retried. */
class Outcome extends Error {
  constructor(
    readonly status: Exclude<PushStatus, 'running' | 'failed' | 'done'>,
    message: string,
  ) {
    super(message);
  }
}

class StepFailed extends Error {}

const der = (pem: string): Buffer => new X509Certificate(pem).raw;
const renewalAt = (r: { notBefore: Date; notAfter: Date }) => new Date(r.notBefore.getTime() + ((r.notAfter.getTime() - r.notBefore.getTime()) * 2) / 3);
/** Steps after which a certificate may have been issued by the attempt that stopped there. */
const AFTER_ISSUE = new Set<PushStep>(['issue', 'update', 'trust', 'crl', 'apply', 'verify']);

/**
 * Push provisioning of approved OPC UA servers (Part 12): CreateSigningRequest
 * with a new key, the CSR checked, a certificate issued, UpdateCertificate,
 * our CA added to the TrustList, CRLs where the server takes them,
 * ApplyChanges, then a session pinned to the new certificate proves the
 * server presents it and holds its key. Every step is logged as begun
 * before it starts and as ok or failed after; a certificate is recorded
 * before it leaves the process. An attempt that stopped (crash, power cut)
 * is picked up from what the server presents: ours and valid, it is done;
 * otherwise a certificate the attempt issued and the server does not
 * present is revoked, and the push starts again from a new CSR.
 */
export class OpcuaPush {
  private readonly inFlight = new Set<string>();
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly deps: OpcuaPushDeps) {}

  /**
   * Starts due jobs in the free slots (opcua.push.concurrency at most in
   * flight); each finished job looks for the next. Resolves when nothing is
   * due or in flight any more, or `signal` aborts.
   */
  kick(signal: AbortSignal): Promise<void> {
    const c = this.deps.config();
    if (c.enabled && !signal.aborted) {
      const free = c.concurrency - this.inFlight.size;
      const due = free > 0 ? this.deps.pushes.due(new Date(), c.concurrency + this.inFlight.size).filter((j) => !this.inFlight.has(j.deviceId)).slice(0, free) : [];
      for (const job of due) {
        this.inFlight.add(job.deviceId);
        const running = this.deps.locks
          .run(job.deviceId, () => this.attempt(job.deviceId))
          .catch((err: unknown) => this.deps.log.error({ err, device: job.deviceId }, 'OPC UA push attempt failed unexpectedly'))
          .finally(() => {
            this.inFlight.delete(job.deviceId);
            this.running.delete(running);
            void this.kick(signal);
          });
        this.running.add(running);
      }
    }
    return this.idle();
  }

  /** Resolves once no attempt is in flight. */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running]);
  }

  /** One attempt at one server, recorded whatever happens. */
  async attempt(deviceId: string): Promise<void> {
    const { pushes, devices, store, log } = this.deps;
    const before = pushes.get(deviceId);
    const device = devices.get(deviceId);
    if (!before || before.status === 'stopped') return;
    if (!device || device.state === 'rejected' || device.state === 'revoked' || device.state === 'decommissioned') {
      store.durable(() => pushes.finish(deviceId, 'stopped', `the server is ${device?.state ?? 'gone from the inventory'}`));
      return;
    }
    const job = store.durable(() => pushes.begin(deviceId));
    const c = this.deps.config();
    try {
      const { serial, crlDelivered, note } = await this.steps(job, device, c, before.status === 'done');
      const record = this.deps.ca.certificate(serial)!.record;
      store.durable(() => {
        pushes.finish(deviceId, 'done', note, { serial, nextAttemptAt: renewalAt(record), ...(crlDelivered !== undefined ? { crlDelivered } : {}) });
        devices.apply({
          protocol: 'opcua',
          name: device.name,
          to: 'provisioned',
          cause: note,
          actor: 'agent',
          details: { serial, notAfter: record.notAfter.toISOString() },
          patch: { certificateSerial: serial, reason: null },
        });
      });
      log.info({ device: deviceId, serial, attempt: job.attempts }, 'OPC UA server provisioned');
      this.deps.bus.emit('opcua.push', { deviceId, status: 'done', serial });
    } catch (err) {
      const message = (err as Error).message;
      const status = err instanceof Outcome ? err.status : 'failed';
      const wait = Math.min(c.retryMaxMs, c.retryInitialMs * 2 ** Math.min(job.attempts - 1, 20));
      // Full jitter, at least half the wait: servers failing together do not come back together.
      const nextAttemptAt = status === 'stopped' ? undefined : new Date(Date.now() + (status === 'unsupported' ? c.retryMaxMs : wait / 2 + Math.random() * (wait / 2)));
      store.durable(() => {
        pushes.finish(deviceId, status, message, nextAttemptAt ? { nextAttemptAt } : {});
        const now = devices.get(deviceId)!;
        if (now.reason !== message) devices.apply({ protocol: 'opcua', name: now.name, to: now.state, cause: `push ${status}: ${message}`, actor: 'agent', patch: { reason: message } });
      });
      log[status === 'failed' ? 'warn' : 'info']({ device: deviceId, attempt: job.attempts, status, reason: message, nextAttemptAt }, 'OPC UA push did not complete');
      this.deps.bus.emit('opcua.push', { deviceId, status, reason: message });
    }
  }

  /** `renewing`: the job was done and came due, its certificate past two thirds of its life. */
  private async steps(job: PushJob, device: Device, c: Config['opcua']['push'], renewing: boolean): Promise<{ serial: string; crlDelivered?: boolean; note: string }> {
    const { ca, sessions, pushes, store } = this.deps;
    const source = opcuaSource(device);
    if (!source) throw new Outcome('unsupported', 'discovery recorded no endpoint for this server');
    const url = source.endpointUrl;
    const uri = job.applicationUri;
    const step = async <T>(name: PushStep, work: () => Promise<T>, ok: (r: T) => string = () => ''): Promise<T> => {
      store.durable(() => pushes.log(job.deviceId, job.attempts, name, 'begun'));
      try {
        const result = await work();
        store.durable(() => pushes.log(job.deviceId, job.attempts, name, 'ok', ok(result) || undefined));
        return result;
      } catch (err) {
        const message = (err as Error).message;
        store.durable(() => pushes.log(job.deviceId, job.attempts, name, 'failed', message));
        throw err instanceof Outcome ? err : new StepFailed(`${name}: ${message}`);
      }
    };

    const admin = securityAdminFor(c, uri);
    if (typeof admin === 'string') throw new Outcome('unsupported', admin);
    const choice = await step('connect', () => sessions.secureEndpoint(url, c.stepTimeoutMs), (r) => ('endpoint' in r ? `${r.endpoint.securityPolicy}, certificate ${r.endpoint.thumbprint}` : r.refusal));
    if ('refusal' in choice) throw new Outcome('unsupported', choice.refusal);
    const endpoint = choice.endpoint;
    // What the server presents, if the gateway CA issued it for this server.
    const found = ca.issuedAs(endpoint.certificate);
    const presented = found && found.profile === 'opcua-application' && found.identity === uri ? found : undefined;
    const presentedValid = presented !== undefined && presented.status !== 'revoked' && presented.notAfter > new Date();
    this.revokeOrphans(job, presented);

    if (presentedValid && renewalAt(presented) > new Date() && !renewing) {
      // The server presents our valid certificate: a push that stopped after ApplyChanges, or an approval of a provisioned server.
      await step('verify', () => sessions.waitForCertificate(url, der(presented.pem), admin, c.stepTimeoutMs, c.applyWaitMs), () => `presents ${presented.serial} and holds its key`);
      this.checkChain(presented);
      return { serial: presented.serial, note: `the server presents certificate ${presented.serial} from the gateway CA` };
    }
    if (!presented && job.approvedThumbprint && endpoint.thumbprint !== job.approvedThumbprint) {
      throw new Outcome('stopped', `the server presents certificate ${endpoint.thumbprint}, not the one approved (${job.approvedThumbprint}) nor one from the gateway CA: approve it again once it is known to be the same server`);
    }

    const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    const commonName = (device.nameplate.displayName ?? device.name).slice(0, 64);
    const session = await step('session', () => sessions.openAdminSession(url, endpoint, admin, c.stepTimeoutMs), () => `${admin.username}, ${endpoint.securityPolicy}, pinned to ${endpoint.thumbprint}`);
    const issued = await (async (calls) => {
      const subject = `CN=${commonName.replace(/[/=]/g, ' ')}/O=${this.deps.organization().replace(/[/=]/g, ' ')}`;
      const csr = await step(
        'csr',
        async () => {
          // The address space may list Part 12's nodes without an implementation behind them.
          const refusal = await calls.pushRefusal();
          if (refusal) throw new Outcome('unsupported', `the server has no push management (${refusal}); install a certificate by hand: edge-agent opcua export-bundle --id ${device.id}`);
          return calls.createSigningRequest(subject);
        },
        (b) => `${b.length} bytes`,
      );
      await step('check-csr', async () => {
        const parsed = parseCsr(csr);
        verifyCsr(parsed);
        if (parsed.requested.uris.length !== 1 || parsed.requested.uris[0] !== uri) {
          throw new Error(`the CSR names ${parsed.requested.uris.length === 0 ? 'no URI' : parsed.requested.uris.join(', ')} in its subjectAltName, not exactly the server's applicationUri ${uri}`);
        }
      });
      const cert = await step(
        'issue',
        async () => {
          const r = await ca.issue({ profile: 'opcua-application', identity: uri, commonName, csr, renew: true, ...(isIP(host) ? { ipAddresses: [host] } : { dnsNames: [host] }) });
          // Recorded before the certificate leaves the process: a crash from here on leaves a serial to revoke.
          store.durable(() => pushes.issued(job.deviceId, r.record.serial));
          return r;
        },
        (r) => `serial ${r.record.serial}`,
      );
      const leaf = der(cert.record.pem);
      const chain = cert.chain.map(der);
      await step('update', () => calls.updateCertificate(leaf, chain), (r) => `applyChangesRequired ${r.applyChangesRequired}`);
      failpoint('opcua.push.after-update');
      await step('trust', async () => {
        await calls.addTrusted(chain[0]!, true);
        for (const above of chain.slice(1)) await calls.addTrusted(above, false);
      }, () => `issuing CA trusted, ${chain.length - 1} CA(s) above it as issuers`);
      // Never fails the push: where the server takes no CRLs, that is recorded and shown.
      const crl = await step('crl', () => calls.deliverCrls(ca.crlDers()), (r) => `${r.delivered ? 'delivered' : 'not delivered'}: ${r.detail}`);
      await step('apply', () => calls.applyChanges());
      return { record: cert.record, leaf, crl };
    })(session.calls).finally(() => session.close());
    await step('verify', () => sessions.waitForCertificate(url, issued.leaf, admin, c.stepTimeoutMs, c.applyWaitMs), () => `presents ${issued.record.serial} (${thumbprintOf(issued.leaf)}) and holds its key`);
    this.checkChain(issued.record);
    // The certificate the server presented before (a renewal) is replaced: revoked, so no valid certificate is left unused.
    if (presentedValid && presented.serial !== issued.record.serial) ca.revoke(presented.serial, 'superseded');
    const crlNote = issued.crl.delivered ? 'CRLs delivered' : `CRLs not delivered (${issued.crl.detail})`;
    return { serial: issued.record.serial, crlDelivered: issued.crl.delivered, note: `certificate ${issued.record.serial} pushed and presented by the server; ${crlNote}` };
  }

  /**
   * Certificates an earlier attempt issued that the server does not present
   * (it stopped before ApplyChanges took effect) are revoked before anything
   * new is issued: the one the job recorded, and the identity's current one
   * when the attempt got past issuing before it could record it.
   */
  private revokeOrphans(job: PushJob, presented: CertificateRecord | undefined): void {
    const { ca, log } = this.deps;
    const candidates = new Set<string>();
    if (job.serial) candidates.add(job.serial);
    const current = ca.current('opcua-application', job.applicationUri);
    if (current && AFTER_ISSUE.has(job.step)) candidates.add(current.serial);
    for (const serial of candidates) {
      const record = ca.certificate(serial)?.record;
      if (!record || serial === presented?.serial || record.status === 'revoked' || record.notAfter <= new Date()) continue;
      ca.revoke(serial, 'superseded');
      log.warn({ device: job.deviceId, serial }, 'certificate issued by an earlier push that the server never applied: revoked');
    }
  }

  /** The certificate chains to our CA (node:crypto, independent of node-opcua's checks). */
  private checkChain(record: CertificateRecord): void {
    const found = this.deps.ca.certificate(record.serial);
    const chain = found!.chain.map((p) => new X509Certificate(p));
    let cert = new X509Certificate(record.pem);
    for (const issuer of chain) {
      if (!cert.checkIssued(issuer) || !cert.verify(issuer.publicKey)) throw new StepFailed(`verify: certificate ${record.serial} does not chain to the gateway CA (${issuer.subject})`);
      cert = issuer;
    }
  }
}
