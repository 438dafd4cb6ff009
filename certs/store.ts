import type { ProfileName } from './profiles/profile.js';

export type RevocationReason = 'unspecified' | 'keyCompromise' | 'affiliationChanged' | 'superseded' | 'cessationOfOperation' | 'privilegeWithdrawn';

/** RFC 5280 CRLReason codes. */
export const REVOCATION_REASON_CODES: Record<RevocationReason, number> = {
  unspecified: 0,
  keyCompromise: 1,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  privilegeWithdrawn: 9,
};

export type CertificateStatus = 'valid' | 'revoked' | 'superseded';

export interface CertificateRecord {
  /** Lower-case hex of the serial's magnitude. */
  serial: string;
  /** Which issuing CA signed it: `ec` or `rsa`. */
  issuer: 'ec' | 'rsa';
  profile: ProfileName;
  identity: string;
  subject: string;
  /** The subjectAltName as text ("URI:…, DNS:…, IP:…"), empty when there is none. */
  san: string;
  notBefore: Date;
  notAfter: Date;
  /** Hex SHA-256 of the certificate DER. */
  thumbprint: string;
  /** Hex SHA-256 of the SubjectPublicKeyInfo. */
  spkiSha256: string;
  pem: string;
  status: CertificateStatus;
  issuedAt: Date;
  revokedAt?: Date;
  revocationReason?: RevocationReason;
  supersededBy?: string;
}

export interface RevokedEntry {
  serial: string;
  revokedAt: Date;
  reason: RevocationReason;
}

export interface ListFilter {
  profile?: ProfileName;
  identity?: string;
  status?: CertificateStatus;
  /** Valid certificates whose notAfter is before this time. */
  expiringBefore?: Date;
  limit?: number;
}

/**
 * What the authority needs from storage. The agent implements it on SQLite
 * (agent/store/certificateRepository.ts).
 */
export interface CertificateStore {
  /** The identity a public key is bound to, if any certificate was ever issued for it. */
  keyBinding(spkiSha256: string): { identity: string; profile: ProfileName } | undefined;
  /** Whether a certificate for this key was ever revoked for keyCompromise. */
  keyCompromised(spkiSha256: string): boolean;
  /** The valid certificate of this identity under this profile, if any. */
  current(profile: ProfileName, identity: string): CertificateRecord | undefined;
  /**
   * Records an issued certificate durably (fsynced) before resolving, binds
   * its key to its identity and supersedes the identity's previous valid
   * certificate under the same profile (whose serial it returns). The key
   * checks are made again inside the commit, so concurrent requests cannot
   * slip past them: a key bound to another identity (KEY_BOUND_TO_OTHER_IDENTITY),
   * a compromised key (KEY_COMPROMISED), or this identity's own key again
   * without `allowKeyReuse` (KEY_REUSE_NOT_ALLOWED) is refused, and nothing
   * is recorded. The same request again (same profile, identity, key,
   * subject and SAN, without `renew`) is not recorded either: the
   * certificate already issued is returned as `repeated`.
   * Implementations may group concurrent calls into one commit.
   * `alongside` runs inside that commit, after the certificate is written
   * (with the repeated certificate instead, when there is one): the
   * caller's record of what the certificate answers. If it throws, the
   * certificate and its writes are left out (the other records of a grouped
   * commit stay) and record() rejects with that error.
   */
  record(
    record: CertificateRecord,
    policy: { allowKeyReuse: boolean; renew: boolean },
    alongside?: (record: CertificateRecord) => void,
  ): Promise<{ supersedes?: string; repeated?: CertificateRecord }>;
  /** Runs `work` in one durable commit (the caller's own records, next to no new certificate). */
  commit(work: () => void): void;
  get(serial: string): CertificateRecord | undefined;
  list(filter: ListFilter): CertificateRecord[];
  /**
   * Marks a certificate revoked, durably (CERT_NOT_FOUND / CERT_ALREADY_REVOKED
   * otherwise). For keyCompromise, every other unrevoked certificate of the
   * same key is revoked in the same commit and returned in `alsoRevoked`.
   */
  revoke(serial: string, reason: RevocationReason, at: Date): { revoked: CertificateRecord; alsoRevoked: CertificateRecord[] };
  /** Revoked certificates of one issuer that have not expired yet (what a CRL lists). */
  revokedBy(issuer: 'ec' | 'rsa', now: Date): RevokedEntry[];
  /** The next CRL number for an issuer, durably incremented. */
  nextCrlNumber(issuer: 'ec' | 'rsa'): number;
}
