import type { Logger } from '../log.js';
import type { Device } from '../inventory/device.js';
import type { ReportRepository } from '../store/reportRepository.js';
import type { BrokerWitness } from '../transport/brokerWitness.js';
import type { EnrollmentWitness } from '../onboarding/enrollmentWitness.js';
import type { Sighting, SightingKind } from './types.js';

export interface SightingRecorderDeps {
  log: Logger;
  /** Where sightings are written; `sightingsSince`, when given, tells start() the subjects each address already has. */
  reports: Pick<ReportRepository, 'addSightings'> & Partial<Pick<ReportRepository, 'sightingsSince'>>;
  /** The certificate of a serial and the valid one of an MQTT identity (its key), from the CA's records. */
  certificates: {
    get(serial: string): { status: string; identity: string; spkiSha256: string } | undefined;
    current(profile: 'mqtt-device', identity: string): { serial: string; spkiSha256: string } | undefined;
  };
  devices: { byName(protocol: 'mqtt', name: string): Device | undefined };
  /** Whether the report is on (report.enabled): off, nothing is recorded. */
  enabled?: () => boolean;
  /** How often the coalesced sightings are written (ms). */
  flushMs?: number;
  /** Subjects held in memory between writes at most; more are counted as dropped. */
  maxPending?: number;
  /** New subjects per remote address and kind within the sighting window (SUBJECTS_PER_ADDRESS); more fold into `mqtt:@<address>`. */
  perAddress?: number;
}

/**
 * Client ids one remote address may add as subjects of one kind within the
 * sighting window (report.sightingDays); the sightings of further client ids
 * from it are folded into the one subject `mqtt:@<address>`, whose evidence
 * `folded` counts them. Client ids cost an unauthenticated client nothing: a
 * new one per connection would otherwise be a new finding each.
 */
export const SUBJECTS_PER_ADDRESS = 20;
/** Addresses whose subjects are remembered at most (the least recently seen is forgotten first). */
const MAX_ADDRESSES = 10_000;
/** The kinds whose subject is a client id the client chose. */
const FOLDED_KINDS: ReadonlySet<SightingKind> = new Set(['shadow.unenrolled_client', 'shadow.uncertified_announcement']);
const DAY_MS = 86_400_000;

/** What one address added of one kind: its subjects (last seen, ms) and how many sightings were folded. */
interface AddressSubjects {
  subjects: Map<string, number>;
  folded: number;
}

const DEFAULT_FLUSH_MS = 2_000;
const DEFAULT_MAX_PENDING = 10_000;
const clip = (s: string, n = 200) => (s.length > n ? `${s.slice(0, n)}…` : s);

/**
 * Records what the transports saw that no identity explains (sightings).
 * Hooks call it per event; it coalesces in memory by kind and subject and
 * writes the batch at most every `flushMs` (one transaction, counts added,
 * last seen moved on), never one write per message. A flood of new
 * subjects beyond `maxPending` between writes is counted and logged, not
 * kept. A remote address adds at most `perAddress` client ids of a kind
 * within the sighting window; its further ones are folded into
 * `mqtt:@<address>` (SUBJECTS_PER_ADDRESS).
 */
export class SightingRecorder implements BrokerWitness, EnrollmentWitness {
  private pending = new Map<string, Sighting>();
  private timer: NodeJS.Timeout | undefined;
  private dropped = 0;
  /** By kind and remote address (NUL between), least recently seen first. */
  private addresses = new Map<string, AddressSubjects>();
  private windowMs = 7 * DAY_MS;

  constructor(private readonly deps: SightingRecorderDeps) {}

  /** The sighting window (report.sightingDays): a subject last seen before it no longer counts against its address. */
  setWindow(sightingDays: number): void {
    this.windowMs = sightingDays * DAY_MS;
  }

  /** Starts the timer, first learning from the database which subjects each address has within the window. */
  start(now = new Date()): void {
    this.addresses = new Map();
    try {
      const known = this.deps.reports.sightingsSince?.(new Date(now.getTime() - this.windowMs)) ?? [];
      for (const s of [...known].sort((a, b) => a.lastSeen.getTime() - b.lastSeen.getTime())) {
        if (!FOLDED_KINDS.has(s.kind)) continue;
        const address = typeof s.evidence.remoteAddress === 'string' ? s.evidence.remoteAddress : 'unknown';
        const entry = this.entry(s.kind, address);
        if (s.subject === `mqtt:@${address}`) {
          if (typeof s.evidence.folded === 'number') entry.folded = s.evidence.folded;
        } else if (entry.subjects.size < this.perAddress) entry.subjects.set(s.subject, s.lastSeen.getTime());
      }
    } catch (err) {
      this.deps.log.warn({ err }, 'report: the sightings of the window could not be read');
    }
    clearInterval(this.timer);
    this.timer = setInterval(() => this.flush(), this.deps.flushMs ?? DEFAULT_FLUSH_MS);
    this.timer.unref();
  }

  /** Writes what is pending; the timer stops. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.flush();
  }

  /** Writes the coalesced sightings now (before an evaluation, and on the timer). Never throws. */
  flush(): void {
    if (this.dropped > 0) {
      this.deps.log.warn(
        { dropped: this.dropped, limit: this.deps.maxPending ?? DEFAULT_MAX_PENDING },
        'report sightings dropped: too many new subjects at once',
      );
      this.dropped = 0;
    }
    if (this.pending.size === 0) return;
    const batch = [...this.pending.values()];
    this.pending = new Map();
    try {
      this.deps.reports.addSightings(batch);
    } catch (err) {
      this.deps.log.error({ err, sightings: batch.length }, 'report sightings could not be written');
    }
  }

  record(kind: SightingKind, subject: string, evidence: Record<string, unknown>, at = new Date()): void {
    if (this.deps.enabled && !this.deps.enabled()) return;
    const k = `${kind}\u0000${subject}`;
    const held = this.pending.get(k);
    if (held) {
      held.count += 1;
      held.lastSeen = at;
      held.evidence = evidence;
      return;
    }
    if (this.pending.size >= (this.deps.maxPending ?? DEFAULT_MAX_PENDING)) {
      this.dropped += 1;
      return;
    }
    this.pending.set(k, { kind, protocol: 'mqtt', subject, evidence, firstSeen: at, lastSeen: at, count: 1 });
  }

  private get perAddress(): number {
    return this.deps.perAddress ?? SUBJECTS_PER_ADDRESS;
  }

  /** The subjects of a kind and address, now the most recently seen (the least recently seen beyond MAX_ADDRESSES forgotten). */
  private entry(kind: SightingKind, address: string): AddressSubjects {
    const k = `${kind}\u0000${address}`;
    const entry = this.addresses.get(k) ?? { subjects: new Map<string, number>(), folded: 0 };
    this.addresses.delete(k);
    this.addresses.set(k, entry);
    if (this.addresses.size > MAX_ADDRESSES) this.addresses.delete(this.addresses.keys().next().value!);
    return entry;
  }

  /**
   * Records a sighting of a client-chosen subject: under its own subject if
   * the address has it, or has fewer than `perAddress` within the window;
   * else under `mqtt:@<address>`, `folded` counting the folded sightings.
   */
  private recordFrom(kind: SightingKind, subject: string, address: string | undefined, evidence: Record<string, unknown>, at = new Date()): void {
    if (this.deps.enabled && !this.deps.enabled()) return;
    const from = address ?? 'unknown';
    const own = `mqtt:@${from}`;
    const entry = this.entry(kind, from);
    const t = at.getTime();
    if (subject !== own && !entry.subjects.has(subject)) for (const [s, last] of entry.subjects) if (last < t - this.windowMs) entry.subjects.delete(s);
    if (subject !== own && (entry.subjects.has(subject) || entry.subjects.size < this.perAddress)) {
      entry.subjects.set(subject, t);
      this.record(kind, subject, evidence, at);
      return;
    }
    if (subject !== own) entry.folded += 1;
    this.record(kind, own, entry.folded > 0 ? { ...evidence, folded: entry.folded } : evidence, at);
  }

  unenrolledClient(e: Parameters<BrokerWitness['unenrolledClient']>[0]): void {
    // A client without a client id is told apart by its address.
    const subject = e.clientId !== '' ? `mqtt:${clip(e.clientId, 128)}` : `mqtt:@${e.remoteAddress ?? 'unknown'}`;
    this.recordFrom('shadow.unenrolled_client', subject, e.remoteAddress, {
      listener: 'provisioning',
      clientId: clip(e.clientId, 128),
      remoteAddress: e.remoteAddress ?? null,
      stayedSeconds: Math.round(e.stayedMs / 1000),
      left: e.left,
      ...(e.refused ? { refused: e.refused } : {}),
    });
  }

  uncertifiedAnnouncement(e: Parameters<BrokerWitness['uncertifiedAnnouncement']>[0]): void {
    this.recordFrom('shadow.uncertified_announcement', `mqtt:${clip(e.clientId, 128)}`, e.remoteAddress, {
      listener: 'provisioning',
      clientId: clip(e.clientId, 128),
      remoteAddress: e.remoteAddress ?? null,
      topic: clip(e.topic),
      bytes: e.bytes,
    });
  }

  refusedCertificate(e: Parameters<BrokerWitness['refusedCertificate']>[0]): void {
    try {
      const cert = this.deps.certificates.get(e.serial);
      const device = this.deps.devices.byName('mqtt', e.identity);
      const revoked = cert?.status === 'revoked';
      const gone = device?.state === 'revoked' || device?.state === 'decommissioned';
      // A superseded certificate of a device in good standing is a device that has not picked up its renewal: not this finding.
      if (!revoked && !gone) return;
      this.record('revoked_connecting', `mqtt:${e.identity}`, {
        via: 'mutual-tls',
        serial: e.serial,
        certificateStatus: cert?.status ?? 'unknown',
        deviceState: device?.state ?? null,
        remoteAddress: e.remoteAddress ?? null,
      });
    } catch (err) {
      this.deps.log.warn({ err, identity: e.identity }, 'report: a refused certificate could not be looked up');
    }
  }

  enrollmentRequest(e: Parameters<EnrollmentWitness['enrollmentRequest']>[0]): void {
    try {
      const state = e.device?.state;
      if (state === 'revoked' || state === 'decommissioned') {
        this.record('revoked_connecting', `mqtt:${e.name}`, { via: 'enrollment', requestId: e.requestId, deviceState: state, spkiSha256: e.spkiSha256 });
        return;
      }
      if (e.action === 'approve') return;
      // The id is held by a valid certificate for another key, and this request was not approved: someone else presents it.
      const held = this.deps.certificates.current('mqtt-device', e.name);
      if (held && held.spkiSha256 !== e.spkiSha256)
        this.record('shadow.identity_conflict', `mqtt:${e.name}`, {
          requestId: e.requestId,
          presentedKey: e.spkiSha256,
          heldKey: held.spkiSha256,
          heldBy: held.serial,
          decision: e.action,
        });
    } catch (err) {
      this.deps.log.warn({ err, device: e.name }, 'report: an enrollment request could not be looked at');
    }
  }
}
