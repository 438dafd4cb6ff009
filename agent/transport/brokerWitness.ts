/**
 * What the embedded broker tells the device report (agent/report/sightings.ts)
 * about clients no identity from the gateway CA explains. Calls are cheap and
 * never throw back into the broker: the witness only counts in memory.
 */
export interface BrokerWitness {
  /** A client on the provisioning listener that sent CONNECT and left, or stayed `stayedMs`, without publishing an enrollment request. */
  unenrolledClient(e: { clientId: string; remoteAddress: string | undefined; stayedMs: number; left: boolean; refused?: string }): void;
  /** A Sparkplug, Homie or Home Assistant announcement refused because it came without a certificate (provisioning listener). */
  uncertifiedAnnouncement(e: { clientId: string; remoteAddress: string | undefined; topic: string; bytes: number }): void;
  /** A certificate from the gateway CA refused on the mutual-TLS listener (revoked, superseded, its device revoked or decommissioned). */
  refusedCertificate(e: { identity: string; serial: string; remoteAddress: string | undefined }): void;
}

/** Announcement topics: Sparkplug B, Homie, Home Assistant discovery. */
export const ANNOUNCEMENT_ROOTS = ['spBv1.0', 'homie', 'homeassistant'] as const;

export const isAnnouncement = (topic: string): boolean => (ANNOUNCEMENT_ROOTS as readonly string[]).includes(topic.split('/', 1)[0]!);
