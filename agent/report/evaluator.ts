import type { CertificateRecord } from '../../certs/store.js';
import type { Device } from '../inventory/device.js';
import type { PatchPolicy } from './patchPolicy.js';
import type { FindingFacts, FindingKind, Sighting } from './types.js';

/** What one evaluation looks at, read by the caller. */
export interface EvaluationInput {
  now: Date;
  /**
   * Every device of the inventory, read once, in one pass: an iterable that
   * reads the inventory by slices keeps no more than a slice in memory
   * (the evaluation keeps only the devices the sightings and the expiring
   * certificates name).
   */
  devices: Iterable<Device>;
  /** Sightings last seen within report.sightingDays. */
  sightings: readonly Sighting[];
  /** Valid device certificates (mqtt-device, opcua-application) ending before now + report.expiringDays. */
  expiring: readonly CertificateRecord[];
  policy: PatchPolicy;
  staleDays: number;
  expiringDays: number;
}

const DAY_MS = 86_400_000;
const UNPROVISIONED = new Set(['discovered', 'pending', 'rejected']);

/** The report's subject of a device: `opcua:<applicationUri>` for an OPC UA server (as the CMMS knows it), else its id. */
export function deviceSubject(d: Device): string {
  const uri = (d.source.opcua as { applicationUri?: string } | undefined)?.applicationUri;
  return d.protocol === 'opcua' && uri ? `opcua:${uri}` : d.id;
}

const nameplateOf = (d: Device) => ({
  manufacturer: d.nameplate.manufacturer ?? null,
  model: d.nameplate.model ?? null,
  softwareVersion: d.nameplate.firmwareVersion ?? null,
});

/**
 * Computes the findings from facts, without I/O: shadow devices (from the
 * sightings, and OPC UA servers discovery found that were never
 * provisioned), unpatched and patch_unknown (provisioned devices, and OPC UA
 * servers not yet provisioned, that a patch rule covers), stale (provisioned, not seen for staleDays), expiring (a
 * valid certificate ending within expiringDays with no successor) and
 * revoked_connecting. A sighting that the inventory explains since (the
 * client enrolled; the revoked device was provisioned again) is left out.
 */
export function evaluate(input: EvaluationInput): FindingFacts[] {
  const { now } = input;
  // The devices the sightings and the expiring certificates name, kept from the one pass over the inventory.
  const names = new Set(input.sightings.flatMap((s) => (s.subject.startsWith('mqtt:') ? [s.subject.slice('mqtt:'.length)] : [])));
  for (const c of input.expiring) if (c.profile === 'mqtt-device') names.add(c.identity);
  const serials = new Set(input.expiring.map((c) => c.serial));
  const uris = new Set(input.expiring.map((c) => `opcua:${c.identity}`));
  const mqtt = new Map<string, Device>();
  const byCertificate = new Map<string, Device>();
  const byUri = new Map<string, Device>();
  const fromDevices = devicesFindings(input, (d, subject) => {
    if (d.protocol === 'mqtt' && names.has(d.name)) mqtt.set(d.name, d);
    if (d.certificateSerial && serials.has(d.certificateSerial)) byCertificate.set(d.certificateSerial, d);
    if (uris.has(subject)) byUri.set(subject, d);
  });
  const out: FindingFacts[] = [];

  for (const s of input.sightings) {
    const name = s.subject.startsWith('mqtt:') ? s.subject.slice('mqtt:'.length) : undefined;
    const device = name === undefined ? undefined : mqtt.get(name);
    const base = { subject: s.subject, evidence: { ...s.evidence, count: s.count }, firstSeen: s.firstSeen, lastSeen: s.lastSeen };
    // Client ids beyond the first few of one address, folded into `mqtt:@<address>` (sightings.ts).
    const folded = typeof s.evidence.folded === 'number' ? s.evidence.folded : undefined;
    if (folded !== undefined && (s.kind === 'shadow.unenrolled_client' || s.kind === 'shadow.uncertified_announcement')) {
      const what =
        s.kind === 'shadow.unenrolled_client' ? 'connected to the provisioning listener without enrolling' : 'announced themselves without a certificate';
      out.push({
        ...base,
        kind: s.kind,
        deviceId: null,
        summary:
          `MQTT clients from ${s.subject.slice(6)} ${what} under more client ids than are reported one by one ` +
          `(${folded} sightings folded into this finding, ${s.count}× in all)`,
      });
      continue;
    }
    if (s.kind === 'shadow.unenrolled_client') {
      // A client id the inventory knows by an enrollment (a device polling for its pending answer) is no shadow.
      if (device && device.state !== 'discovered') continue;
      const who = typeof s.evidence.remoteAddress === 'string' ? ` from ${s.evidence.remoteAddress}` : '';
      out.push({
        ...base,
        kind: s.kind,
        deviceId: null,
        summary: `MQTT client ${s.subject.slice(5)}${who} connected to the provisioning listener without enrolling (${s.count}×)`,
      });
    } else if (s.kind === 'shadow.uncertified_announcement') {
      out.push({
        ...base,
        kind: s.kind,
        deviceId: device?.id ?? null,
        summary: `MQTT client ${s.subject.slice(5)} announced itself on ${String(s.evidence.topic)} without a certificate (${s.count}×)`,
      });
    } else if (s.kind === 'shadow.identity_conflict') {
      // Stays until the sighting is older than report.sightingDays: a key that was refused or held once is worth a look.
      out.push({
        ...base,
        kind: s.kind,
        deviceId: device?.id ?? null,
        summary: `device id ${name ?? s.subject} was presented with a key other than the one its certificate holds (${s.count}×)`,
      });
    } else if (s.kind === 'revoked_connecting') {
      // Provisioned again after the sighting: a technician let it back in.
      if (device?.state === 'provisioned' && device.updatedAt > s.lastSeen) continue;
      out.push({
        ...base,
        kind: s.kind,
        deviceId: device?.id ?? null,
        summary: `${device?.state ?? 'revoked'} device ${name ?? s.subject} still tries to connect (${String(s.evidence.via)}, ${s.count}×)`,
      });
    }
  }

  out.push(...fromDevices);
  const latest = new Map<string, Date>();
  for (const c of input.expiring)
    latest.set(`${c.profile} ${c.identity}`, new Date(Math.max(latest.get(`${c.profile} ${c.identity}`)?.getTime() ?? 0, c.notAfter.getTime())));
  for (const c of input.expiring) {
    // Another valid certificate of the identity that ends later covers it (the store keeps one valid per identity; this guards the rule).
    if (latest.get(`${c.profile} ${c.identity}`)!.getTime() > c.notAfter.getTime()) continue;
    const device = byCertificate.get(c.serial) ?? (c.profile === 'mqtt-device' ? mqtt.get(c.identity) : byUri.get(`opcua:${c.identity}`));
    if (device?.state === 'decommissioned') continue;
    const ended = c.notAfter <= now;
    out.push({
      kind: 'expiring',
      subject: `certificate:${c.serial}`,
      deviceId: device?.id ?? null,
      summary:
        `certificate ${c.serial} of ${c.identity} (${c.profile}) ${ended ? 'expired' : 'expires'} ${c.notAfter.toISOString()}` +
        ' and no later certificate replaces it',
      evidence: { serial: c.serial, profile: c.profile, identity: c.identity, notAfter: c.notAfter.toISOString(), expiringDays: input.expiringDays },
      firstSeen: c.issuedAt,
      lastSeen: device?.lastSeen ?? c.issuedAt,
    });
  }
  return out;
}

/** The findings of each device on its own (unprovisioned servers, patch levels, stale), in one pass; `seen` is told of each device. */
function devicesFindings(input: EvaluationInput, seen: (d: Device, subject: string) => void): FindingFacts[] {
  const { now, policy } = input;
  const out: FindingFacts[] = [];
  const staleBefore = now.getTime() - input.staleDays * DAY_MS;
  for (const d of input.devices) {
    const subject = deviceSubject(d);
    seen(d, subject);
    if (d.protocol === 'opcua' && UNPROVISIONED.has(d.state)) {
      const endpointUrl = (d.source.opcua as { endpointUrl?: string } | undefined)?.endpointUrl ?? null;
      out.push({
        kind: 'shadow.unprovisioned_server',
        subject,
        deviceId: d.id,
        summary: `OPC UA server ${subject.slice(6)} was found by discovery and never provisioned (${d.state})`,
        evidence: { state: d.state, endpointUrl, ...nameplateOf(d), ...(d.reason ? { reason: d.reason } : {}) },
        firstSeen: d.firstSeen,
        lastSeen: d.lastSeen,
      });
    }
    // Patch levels: provisioned devices, and OPC UA servers not yet provisioned, whose nameplate discovery read from the server
    // itself (BuildInfo, DI). A pending MQTT device's nameplate is what an unauthenticated request claimed: not judged.
    const judged = d.state === 'provisioned' || (d.protocol === 'opcua' && (d.state === 'discovered' || d.state === 'pending'));
    const verdict = judged ? policy.judge(d.nameplate) : ({ status: 'unmatched' } as const);
    if (verdict.status === 'unpatched') {
      out.push({
        kind: 'unpatched',
        subject,
        deviceId: d.id,
        summary: `${d.id} runs ${verdict.version}: ${verdict.violations.map((v) => v.what).join('; ')}`,
        evidence: { ...nameplateOf(d), rules: verdict.rules, violations: verdict.violations },
        firstSeen: d.firstSeen,
        lastSeen: d.lastSeen,
      });
    } else if (verdict.status === 'unknown') {
      out.push({
        kind: 'patch_unknown',
        subject,
        deviceId: d.id,
        summary: `${d.id}: patch level unknown, ${verdict.why}`,
        evidence: { ...nameplateOf(d), rules: verdict.rules, why: verdict.why },
        firstSeen: d.firstSeen,
        lastSeen: d.lastSeen,
      });
    }
    if (d.state === 'provisioned' && d.lastSeen.getTime() < staleBefore) {
      out.push({
        kind: 'stale',
        subject,
        deviceId: d.id,
        summary: `${d.id} has not been seen for ${Math.floor((now.getTime() - d.lastSeen.getTime()) / DAY_MS)} days (report.staleDays: ${input.staleDays})`,
        evidence: { lastSeen: d.lastSeen.toISOString(), staleDays: input.staleDays },
        firstSeen: d.firstSeen,
        lastSeen: d.lastSeen,
      });
    }
  }

  return out;
}

/** Open findings of one kind at most (docs/report.md); more are one overflow finding of the kind, subject OVERFLOW_SUBJECT. */
export const OPEN_PER_KIND = 1_000;
export const OVERFLOW_SUBJECT = 'report:more';

/**
 * Keeps at most `limit` findings of each kind: those already open first (a
 * full kind does not churn), then the earliest seen. The rest become one
 * finding of the kind, subject `report:more`, that says how many more
 * there are (evidence `more`, `limit`); it resolves when the kind is under
 * the limit again. `open` holds the open findings' kind and subject joined
 * by NUL (ReportRepository.openKeys).
 */
export function capPerKind(found: readonly FindingFacts[], open: ReadonlySet<string>, limit = OPEN_PER_KIND): FindingFacts[] {
  const key = (f: FindingFacts) => `${f.kind}\u0000${f.subject}`;
  const byKind = new Map<FindingKind, FindingFacts[]>();
  for (const f of found) {
    const list = byKind.get(f.kind);
    if (list) list.push(f);
    else byKind.set(f.kind, [f]);
  }
  const out: FindingFacts[] = [];
  for (const [kind, list] of byKind) {
    if (list.length <= limit) {
      out.push(...list);
      continue;
    }
    const ranked = [...list].sort(
      (a, b) =>
        Number(open.has(key(b))) - Number(open.has(key(a))) ||
        a.firstSeen.getTime() - b.firstSeen.getTime() ||
        (a.subject < b.subject ? -1 : a.subject > b.subject ? 1 : 0),
    );
    const rest = ranked.slice(limit);
    let first = Number.POSITIVE_INFINITY;
    let last = Number.NEGATIVE_INFINITY;
    for (const f of rest) {
      first = Math.min(first, f.firstSeen.getTime());
      last = Math.max(last, f.lastSeen.getTime());
    }
    out.push(...ranked.slice(0, limit), {
      kind,
      subject: OVERFLOW_SUBJECT,
      deviceId: null,
      summary: `${rest.length} more ${kind} findings are not listed: the report holds at most ${limit} open findings per kind`,
      evidence: { more: rest.length, limit },
      firstSeen: new Date(first),
      lastSeen: new Date(last),
    });
  }
  return out;
}
