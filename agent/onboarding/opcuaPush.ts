import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type { CertificateRecord } from '../../certs/store.js';
import type { CaService } from '../ca/caService.js';
import type { Config } from '../config/schema.js';
import { AgentError } from '../errors.js';
import { contains, parseRange } from '../transport/ranges.js';
import type { EventBus } from '../events.js';
import { failpoint } from '../failpoints.js';
import type { Device } from '../inventory/device.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import type { DeviceRepository } from '../store/deviceRepository.js';
import type { PushJob, PushRepository, PushStatus, PushStep } from '../store/pushRepository.js';
import { thumbprintOf, type AdminUser, type OpcuaPushSessions, type PushCalls, type SecureEndpoint } from '../transport/opcuaPushSession.js';
import type { ChannelRefusedError } from '../transport/opcuaRefusal.js';
import type { DeviceLocks } from './deviceLocks.js';
import { revocationDigest } from './opcuaCrl.js';
import { certificateRefusal, checkServerCsr, opcuaSource, securityAdminFor } from './opcuaPolicy.js';

export interface OpcuaPushDeps {
  log: Logger;
  config: () => Config['opcua'];
  organization: () => string;
  store: Store;
  devices: DeviceRepository;
  pushes: PushRepository;
  ca: CaService;
  sessions: OpcuaPushSessions;
  locks: DeviceLocks;
  bus: EventBus;
}

/**
 * How an attempt ends when the server cannot be pushed to for a reason the
 * push expects (no push management, a certificate not the one approved):
 * a result, not an error. Errors are the failures retried with backoff.
 */
class Ended {
  constructor(
    readonly status: Exclude<PushStatus, 'running' | 'failed' | 'done'>,
    readonly message: string,
  ) {}
}

/** A step of a push that failed: the attempt is retried with backoff. The message names the step, then the cause's. */
class PushStepError extends AgentError {
  readonly code = 'OPCUA_PUSH_STEP_FAILED' as const;
}

/** What a push that went through leaves to record. */
interface Pushed {
  serial: string;
  crlDelivered: boolean;
  crlRevocations?: string | undefined;
  note: string;
}

/**
 * Runs one step of an attempt, logged as begun, then ok or failed: a step
 * whose work ends the push (an Ended) is logged failed with its reason and
 * returns it; an error is logged and thrown, named by the step.
 */
type Step = <T>(name: PushStep, work: () => Promise<T>, ok?: (r: Exclude<T, Ended>) => string) => Promise<T>;

const der = (pem: string): Buffer => new X509Certificate(pem).raw;
const renewalAt = (r: { notBefore: Date; notAfter: Date }) => new Date(r.notBefore.getTime() + ((r.notAfter.getTime() - r.notBefore.getTime()) * 2) / 3);
/** Steps after which a certificate may have been issued by the attempt that stopped there. */
const AFTER_ISSUE = new Set<PushStep>(['issue', 'update', 'trust', 'apply', 'verify']);
/** A server is pushed to again (renewal) at most this often, whatever its certificate's lifetime (a CA near its end issues ever shorter ones). */
const MIN_RENEWAL_GAP_MS = 3_600_000;

/**
 * Push provisioning of approved OPC UA servers (Part 12): a SecurityAdmin
 * session pinned to the approved certificate, CreateSigningRequest with a
 * new key, the CSR checked, a certificate issued, UpdateCertificate, the
 * gateway CA and its CRLs into the TrustList, ApplyChanges, then a session
 * pinned to the new certificate proves the server presents it and holds its
 * key. Every step is logged as begun before it starts and as ok or failed
 * after; a certificate is recorded before it leaves the process. An
 * attempt that stopped (crash, power cut) is picked up from what the server
 * presents: ours and valid, its trust is completed and it is verified;
 * otherwise a certificate an attempt issued that the server never applied
 * is revoked, and the push starts again from a new CSR.
 */
export class OpcuaPush {
  private readonly inFlight = new Set<string>();
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly deps: OpcuaPushDeps) {}

  /**
   * Starts due jobs in the free slots (opcua.push.concurrency at most in
   * flight); each finished job looks for the next.
   */
  kick(signal: AbortSignal): void {
    const c = this.deps.config().push;
    if (!c.enabled || signal.aborted) return;
    const free = c.concurrency - this.inFlight.size;
    const due =
      free > 0
        ? this.deps.pushes
            .due(new Date(), c.concurrency + this.inFlight.size)
            .filter((j) => !this.inFlight.has(j.deviceId))
            .slice(0, free)
        : [];
    for (const job of due) {
      this.inFlight.add(job.deviceId);
      const running = this.deps.locks
        .run(job.deviceId, () => this.attempt(job.deviceId))
        .catch((err: unknown) => this.deps.log.error({ err, device: job.deviceId }, 'OPC UA push attempt failed unexpectedly'))
        .finally(() => {
          this.inFlight.delete(job.deviceId);
          this.running.delete(running);
          this.kick(signal);
        });
      this.running.add(running);
    }
  }

  /** Resolves once no attempt is in flight. */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running]);
  }

  /** One attempt at one server, recorded whatever happens. */
  async attempt(deviceId: string): Promise<void> {
    const { pushes, devices, store } = this.deps;
    const before = pushes.get(deviceId);
    const device = devices.get(deviceId);
    if (!before || before.status === 'stopped') return;
    if (!device || device.state === 'rejected' || device.state === 'revoked' || device.state === 'decommissioned') {
      store.durable(() => pushes.finish(deviceId, 'stopped', `the server is ${device?.state ?? 'gone from the inventory'}`));
      this.revokeUnapplied(before);
      return;
    }
    const job = store.durable(() => pushes.begin(deviceId));
    let result: Pushed | Ended;
    try {
      result = await this.steps(job, device, before.status === 'done');
      if (!(result instanceof Ended)) return this.pushed(job, device, result);
    } catch (err) {
      return this.ended(job, 'failed', (err as Error).message);
    }
    this.ended(job, result.status, result.message);
  }

  /** Records a push that went through: done, the device provisioned, the next attempt at two thirds of the certificate's life. */
  private pushed(job: PushJob, device: Device, { serial, crlDelivered, crlRevocations, note }: Pushed): void {
    const { pushes, devices, store, log } = this.deps;
    const deviceId = job.deviceId;
    const record = this.deps.ca.certificate(serial)!.record;
    const next = new Date(Math.max(renewalAt(record).getTime(), Date.now() + MIN_RENEWAL_GAP_MS));
    store.durable(() => {
      pushes.finish(deviceId, 'done', note, { applied: serial, nextAttemptAt: next, crlDelivered, ...(crlRevocations ? { crlRevocations } : {}) });
      devices.apply({
        protocol: 'opcua',
        name: device.name,
        to: 'provisioned',
        cause: note,
        actor: 'agent',
        details: { serial, notAfter: record.notAfter.toISOString() },
        // The server answered a session pinned to its new certificate: seen, and online.
        patch: { certificateSerial: serial, reason: null, online: true },
      });
    });
    log.info({ device: deviceId, serial, attempt: job.attempts }, 'OPC UA server provisioned');
    this.deps.bus.emit('opcua.push', { deviceId, status: 'done', serial });
  }

  /** Records an attempt that did not push: failed (retried with backoff), unsupported (looked at again after retryMaxMs) or stopped. */
  private ended(job: PushJob, status: Ended['status'] | 'failed', message: string): void {
    const { pushes, devices, store, log } = this.deps;
    const deviceId = job.deviceId;
    const c = this.deps.config().push;
    const wait = Math.min(c.retryMaxMs, c.retryInitialMs * 2 ** Math.min(job.attempts - 1, 20));
    // Jitter over the second half of the wait: servers failing together do not come back together.
    const nextAttemptAt =
      status === 'stopped' ? undefined : new Date(Date.now() + (status === 'unsupported' ? c.retryMaxMs : wait / 2 + Math.random() * (wait / 2)));
    store.durable(() => {
      pushes.finish(deviceId, status, message, nextAttemptAt ? { nextAttemptAt } : {});
      const now = devices.get(deviceId)!;
      // A failed attempt is no sign of the server (it may not have answered at all): last seen stays.
      if (now.reason !== message)
        devices.apply({
          protocol: 'opcua',
          name: now.name,
          to: now.state,
          cause: `push ${status}: ${message}`,
          actor: 'agent',
          patch: { reason: message },
          seen: false,
        });
    });
    if (status === 'stopped') this.revokeUnapplied(pushes.get(deviceId)!);
    log[status === 'failed' ? 'warn' : 'info'](
      { device: deviceId, attempt: job.attempts, status, reason: message, nextAttemptAt },
      'OPC UA push did not complete',
    );
    this.deps.bus.emit('opcua.push', { deviceId, status, reason: message });
  }

  /** `renewing`: the job was done and came due, its certificate past two thirds of its life. */
  private async steps(job: PushJob, device: Device, renewing: boolean): Promise<Pushed | Ended> {
    const { ca, sessions, pushes, store } = this.deps;
    const opcua = this.deps.config();
    const c = opcua.push;
    const source = opcuaSource(device);
    if (!source) return new Ended('unsupported', 'discovery recorded no endpoint for this server');
    const url = source.endpointUrl;
    const uri = job.applicationUri;
    const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    if (!opcua.endpoints.includes(url) && !(isIP(host) === 4 && contains(opcua.scan.ranges.map(parseRange), host))) {
      return new Ended('unsupported', `${url} is neither a configured endpoint nor inside opcua.scan.ranges: not contacted`);
    }
    if (!job.approvedThumbprint)
      return new Ended('stopped', 'no server certificate was on record when it was approved: run a discovery, check the server, and approve it again');
    const admin = securityAdminFor(c, uri);
    if (typeof admin === 'string') return new Ended('unsupported', admin);
    const step: Step = async (name, work, ok = () => '') => {
      store.durable(() => pushes.log(job.deviceId, job.attempts, name, 'begun'));
      const failed = (message: string) => store.durable(() => pushes.log(job.deviceId, job.attempts, name, 'failed', message));
      try {
        const result = await work();
        if (result instanceof Ended) {
          // The push ends at this step, for a reason it expects: logged as the step's failure, as an error is.
          failed(result.message);
          return result;
        }
        store.durable(() => pushes.log(job.deviceId, job.attempts, name, 'ok', ok(result as Exclude<typeof result, Ended>) || undefined));
        return result;
      } catch (err) {
        const message = (err as Error).message;
        failed(message);
        throw new PushStepError(`${name}: ${message}`, { cause: err });
      }
    };

    const choice = await step(
      'connect',
      () => sessions.secureEndpoint(url, c.stepTimeoutMs),
      (r) => ('endpoint' in r ? `${r.endpoint.securityPolicy}, certificate ${r.endpoint.thumbprint}` : r.refusal),
    );
    if ('refusal' in choice) return new Ended('unsupported', choice.refusal);
    const endpoint = choice.endpoint;
    // What the server presents, if the gateway CA issued it for this server (any status).
    const found = ca.issuedAs(endpoint.certificate);
    const presented = found && found.profile === 'opcua-application' && found.identity === uri ? found : undefined;
    if (!presented && endpoint.thumbprint !== job.approvedThumbprint) {
      return new Ended(
        'stopped',
        `the server presents certificate ${endpoint.thumbprint}, not the one approved (${job.approvedThumbprint}) nor one from the gateway CA: ` +
          'approve it again once it is known to be the same server',
      );
    }
    this.revokeOrphans(job, presented);
    const presentedValid = presented !== undefined && presented.status !== 'revoked' && presented.notAfter > new Date();
    const session = (e: SecureEndpoint) =>
      step(
        'session',
        () =>
          sessions.openAdminSession(url, e, admin, c.stepTimeoutMs).catch((err: unknown) => {
            // The server refused the agent's certificate: a commissioning fault, looked at again after retryMaxMs (or a new approval).
            const refusal =
              (err as ChannelRefusedError).code === 'OPCUA_CHANNEL_REFUSED' ? certificateRefusal((err as ChannelRefusedError).statusName) : undefined;
            if (refusal) return new Ended('unsupported', refusal);
            throw err;
          }),
        () => `${admin.username}, ${e.securityPolicy}, pinned to ${e.thumbprint}`,
      );
    const trust = async (calls: PushCalls) => {
      const gateway = ca.opcuaTrust();
      const r = await step(
        'trust',
        () => calls.installTrust(gateway),
        (t) => `${t.detail}${t.crlDelivered ? '' : '; CRLs not delivered'}`,
      );
      // Whether the TrustList took the write tells whether later CRLs can be pushed (see opcuaCrl.ts).
      if (r.method !== 'already') store.durable(() => pushes.crlWritable(job.deviceId, r.method === 'write'));
      return { ...r, crlRevocations: r.crlDelivered ? revocationDigest([...gateway.trustedCrls, ...gateway.issuerCrls]) : undefined };
    };

    if (presentedValid && !renewing && renewalAt(presented) > new Date()) {
      // Our valid certificate already: a push that stopped after UpdateCertificate took effect, or a second approval. Its trust is completed, then verified.
      const open = await session(endpoint);
      if (open instanceof Ended) return open;
      const t = await (async () => {
        const r = await trust(open.calls);
        if (r.method !== 'already' && r.applyChangesRequired) await step('apply', () => open.calls.applyChanges());
        return r;
      })().finally(() => open.close());
      await this.verify(step, url, der(presented.pem), admin);
      return {
        serial: presented.serial,
        crlDelivered: t.crlDelivered,
        crlRevocations: t.crlRevocations,
        note: `the server presents certificate ${presented.serial} from the gateway CA; ${crlNote(t.crlDelivered)}`,
      };
    }

    const commonName = (device.nameplate.displayName ?? device.name).slice(0, 64);
    const open = await session(endpoint);
    if (open instanceof Ended) return open;
    const issued = await (async (calls: PushCalls) => {
      const subject = `CN=${commonName.replace(/[/=]/g, ' ')}/O=${this.deps.organization().replace(/[/=]/g, ' ')}`;
      const csr = await step(
        'csr',
        async () => {
          // The address space may list Part 12's nodes without an implementation behind them.
          const refusal = await calls.pushRefusal();
          if (refusal)
            return new Ended(
              'unsupported',
              `the server has no push management (${refusal}); install a certificate by hand: edge-agent opcua export-bundle --id ${device.id}`,
            );
          return calls.createSigningRequest(subject);
        },
        (b) => `${b.length} bytes`,
      );
      if (csr instanceof Ended) return csr;
      const prepared = await step('check-csr', async () => checkServerCsr(csr, uri));
      const cert = await step(
        'issue',
        // Recorded with the certificate, in its commit, before it leaves the process: a crash from here on leaves a serial to revoke.
        () =>
          ca.issue({
            profile: 'opcua-application',
            identity: uri,
            commonName,
            csr: prepared,
            // The server asked for itself: the profile's validator holds its CSR to its applicationUri.
            origin: 'requester',
            renew: true,
            alongside: (r) => pushes.issued(job.deviceId, r.serial),
            ...(isIP(host) ? { ipAddresses: [host] } : { dnsNames: [host] }),
          }),
        (r) => `serial ${r.record.serial}`,
      );
      const leaf = der(cert.record.pem);
      await step(
        'update',
        () => calls.updateCertificate(leaf, cert.chain.map(der)),
        (r) => `applyChangesRequired ${r.applyChangesRequired}`,
      );
      failpoint('opcua.push.after-update');
      const t = await trust(calls);
      // Only after UpdateCertificate answered Good: a server's pending changes are server-wide.
      await step('apply', () => calls.applyChanges());
      return { record: cert.record, leaf, crlDelivered: t.crlDelivered, crlRevocations: t.crlRevocations };
    })(open.calls).finally(() => open.close());
    if (issued instanceof Ended) return issued;
    await this.verify(step, url, issued.leaf, admin);
    // The certificate the server presented before (a renewal) is replaced: revoked, so no valid certificate is left unused.
    if (presentedValid && presented.serial !== issued.record.serial) this.deps.ca.revoke(presented.serial, 'superseded');
    return {
      serial: issued.record.serial,
      crlDelivered: issued.crlDelivered,
      crlRevocations: issued.crlRevocations,
      note: `certificate ${issued.record.serial} pushed and presented by the server; ${crlNote(issued.crlDelivered)}`,
    };
  }

  private verify(step: Step, url: string, leaf: Buffer, admin: AdminUser): Promise<void> {
    const c = this.deps.config().push;
    return step(
      'verify',
      () => this.deps.sessions.waitForCertificate(url, leaf, admin, c.stepTimeoutMs, c.applyWaitMs),
      () => `presents ${thumbprintOf(leaf)} and holds its key`,
    );
  }

  /**
   * Certificates an earlier attempt issued that the server does not present
   * (it stopped before ApplyChanges took effect) are revoked before anything
   * new is issued: the one the job recorded, and the identity's current one
   * when the attempt got past issuing before it could record it. The one
   * last verified on the server is never among them.
   */
  private revokeOrphans(job: PushJob, presented: CertificateRecord | undefined): void {
    const candidates = new Set<string>();
    if (job.serial) candidates.add(job.serial);
    const current = this.deps.ca.current('opcua-application', job.applicationUri);
    if (current && AFTER_ISSUE.has(job.step)) candidates.add(current.serial);
    candidates.delete(presented?.serial ?? '');
    candidates.delete(job.appliedSerial ?? '');
    this.revoke(job, candidates);
  }

  /** A job stopped: the certificate its last attempt issued is revoked unless the server was verified to present it. */
  private revokeUnapplied(job: PushJob): void {
    if (job.serial && job.serial !== job.appliedSerial) this.revoke(job, new Set([job.serial]));
  }

  private revoke(job: PushJob, serials: Set<string>): void {
    for (const serial of serials) {
      const record = this.deps.ca.certificate(serial)?.record;
      if (!record || record.status === 'revoked' || record.notAfter <= new Date()) continue;
      this.deps.ca.revoke(serial, 'superseded');
      this.deps.log.warn({ device: job.deviceId, serial }, 'certificate issued by an earlier push that the server never applied: revoked');
    }
  }
}

const crlNote = (delivered: boolean) =>
  delivered ? 'the gateway CRLs are in its TrustList' : 'CRLs not delivered (its TrustList takes none): install them by hand';
