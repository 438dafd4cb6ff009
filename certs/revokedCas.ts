import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Reasons an issuing CA can be revoked for (RFC 5280 CRLReason; cACompromise rather than keyCompromise for a CA). */
export type CaRevocationReason = 'unspecified' | 'cACompromise' | 'affiliationChanged' | 'superseded' | 'cessationOfOperation';
export const CA_REVOCATION_REASONS: readonly CaRevocationReason[] = ['unspecified', 'cACompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation'];

/** Where revoked issuing CAs are kept, inside the CA directory: their certificates and the records of their revocation. */
export const REVOKED_DIR = 'revoked';

/**
 * The record of a revoked issuing CA (`revoked/issuing-<name>-<serial>.json`).
 * These records are what the root CRL lists: it is signed again from them,
 * so a lost or damaged root.crl is rebuilt with the root key.
 */
export interface RevokedCa {
  issuer: 'ec' | 'rsa';
  /** Lower-case hex of the serial's magnitude. */
  serial: string;
  subject: string;
  revokedAt: string;
  reason: CaRevocationReason;
}

export const revokedRecordFile = (issuer: 'ec' | 'rsa', serial: string): string => `issuing-${issuer}-${serial}.json`;

/** Every revoked issuing CA recorded in the CA directory, oldest first. */
export function revokedCas(dir: string): RevokedCa[] {
  const revoked = join(dir, REVOKED_DIR);
  if (!existsSync(revoked)) return [];
  return readdirSync(revoked)
    .filter((f) => /^issuing-(ec|rsa)-[0-9a-f]+\.json$/.test(f))
    .map((f) => JSON.parse(readFileSync(join(revoked, f), 'utf8')) as RevokedCa)
    .sort((a, b) => a.revokedAt.localeCompare(b.revokedAt));
}
