/** The kinds of finding the report has (docs/report.md), in the order it lists them. */
export const FINDING_KINDS = [
  'shadow.unenrolled_client',
  'shadow.uncertified_announcement',
  'shadow.unprovisioned_server',
  'shadow.identity_conflict',
  'unpatched',
  'patch_unknown',
  'stale',
  'expiring',
  'revoked_connecting',
] as const;

export type FindingKind = (typeof FINDING_KINDS)[number];

/** The kinds the transports observe (sightings); the others come from the inventory and the CA. */
export type SightingKind = 'shadow.unenrolled_client' | 'shadow.uncertified_announcement' | 'shadow.identity_conflict' | 'revoked_connecting';

/** What one evaluation finds: at most one per kind and subject. */
export interface FindingFacts {
  kind: FindingKind;
  /** What it is about: `mqtt:<client id>`, `opcua:<applicationUri>`, `certificate:<serial>`. */
  subject: string;
  /** The inventory record it concerns, when there is one. */
  deviceId: string | null;
  summary: string;
  evidence: Record<string, unknown>;
  firstSeen: Date;
  lastSeen: Date;
}

/** A line of the report: the facts and when it was opened (and resolved). */
export interface Finding extends FindingFacts {
  id: number;
  openedAt: Date;
  resolvedAt: Date | null;
}

/** A transport's observation, counted and time-stamped (one row per kind and subject). */
export interface Sighting {
  kind: SightingKind;
  protocol: 'mqtt' | 'opcua';
  subject: string;
  evidence: Record<string, unknown>;
  firstSeen: Date;
  lastSeen: Date;
  count: number;
}
