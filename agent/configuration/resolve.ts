import type { Device, Location } from '../inventory/device.js';
import { canonicalJson, valuesSha256, type ProfileDocument, type Scalar } from './profileDocument.js';
import { bestMatch, subjectOf } from './selector.js';
import type { DesiredConfig, JsonValue } from './types.js';

/** A profile at the version in force. */
export interface HeadProfile {
  name: string;
  version: number;
  document: ProfileDocument;
}

/** What a device should run: a profile's version and the SHA-256 of its values for that device; null: nothing. */
export interface DesiredRef {
  profile: string;
  version: number;
  sha256: string;
}

/** The desired reference a device's configuration record holds (null: none). */
export function refOf(row: { profile?: string; desiredVersion?: number; desiredSha256?: string }): DesiredRef | null {
  return row.profile !== undefined && row.desiredVersion !== undefined && row.desiredSha256 !== undefined
    ? { profile: row.profile, version: row.desiredVersion, sha256: row.desiredSha256 }
    : null;
}

export const sameRef = (a: DesiredRef | null, b: DesiredRef | null): boolean =>
  a?.profile === b?.profile && a?.version === b?.version && a?.sha256 === b?.sha256;

/** A profile's values for one device: the profile's, with that device's overrides over them. */
export function valuesFor(doc: ProfileDocument, deviceId: string): Record<string, Scalar> {
  return { ...doc.values, ...(doc.overrides[deviceId] ?? {}) };
}

/**
 * The desired state of one device (contract, "Status rules"): none unless
 * provisioned; the profile it is pinned to (if of its protocol); else the
 * best match of the selectors.
 */
export function resolveDesired(
  device: Device,
  pinned: string | undefined,
  labels: Record<string, string>,
  heads: readonly HeadProfile[],
  gateway: Location,
): DesiredRef | null {
  if (device.state !== 'provisioned') return null;
  let chosen: HeadProfile | undefined;
  if (pinned !== undefined) {
    chosen = heads.find((h) => h.name === pinned && h.document.protocol === device.protocol);
  } else {
    const best = bestMatch(
      heads.map((h) => ({ name: h.name, protocol: h.document.protocol, priority: h.document.priority, selector: h.document.selector, head: h })),
      subjectOf(device, labels, gateway),
    );
    chosen = best?.head;
  }
  if (!chosen) return null;
  return { profile: chosen.name, version: chosen.version, sha256: valuesSha256(valuesFor(chosen.document, device.id)) };
}

/** The message a deliverer sends for a device. */
export function desiredConfig(device: Pick<Device, 'id' | 'protocol' | 'name'>, ref: DesiredRef, doc: ProfileDocument): DesiredConfig {
  const values = valuesFor(doc, device.id) as Record<string, JsonValue>;
  const nodes = doc.nodes ? Object.fromEntries(Object.keys(values).flatMap((k) => (doc.nodes![k] ? [[k, doc.nodes![k]]] : []))) : undefined;
  return {
    deviceId: device.id,
    protocol: device.protocol,
    name: device.name,
    profile: ref.profile,
    version: ref.version,
    sha256: ref.sha256,
    values,
    ...(nodes ? { nodes } : {}),
    reapplyOnDrift: doc.reapplyOnDrift,
  };
}

export interface ValueChange {
  key: string;
  /** Device id for an override; absent for the profile's values. */
  device?: string;
  from?: Scalar;
  to?: Scalar;
}

export interface ProfileDiff {
  /** Top-level fields other than values and overrides that differ (selector, priority, schema, nodes, ...). */
  fields: string[];
  values: ValueChange[];
}

function changes(a: Record<string, Scalar>, b: Record<string, Scalar>, device?: string): ValueChange[] {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  return keys
    .filter((k) => a[k] !== b[k])
    .map((k) => ({ key: k, ...(device ? { device } : {}), ...(a[k] !== undefined ? { from: a[k] } : {}), ...(b[k] !== undefined ? { to: b[k] } : {}) }));
}

/** What differs between two versions of a profile (either may be absent: a new profile). */
export function diffProfiles(a: ProfileDocument | undefined, b: ProfileDocument): ProfileDiff {
  const fields = (['protocol', 'description', 'priority', 'selector', 'schema', 'nodes', 'reapplyOnDrift'] as const).filter(
    (f) => canonicalJson(a?.[f] ?? null) !== canonicalJson(b[f] ?? null),
  );
  const values = changes(a?.values ?? {}, b.values);
  const ids = [...new Set([...Object.keys(a?.overrides ?? {}), ...Object.keys(b.overrides)])].sort();
  for (const id of ids) values.push(...changes(a?.overrides[id] ?? {}, b.overrides[id] ?? {}, id));
  return { fields, values };
}
