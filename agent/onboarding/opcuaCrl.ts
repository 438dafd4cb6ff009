import { createHash } from 'node:crypto';
import { children, expectTag, readExactly, Tag } from '../../certs/x509/der.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import type { PushRepository } from '../store/pushRepository.js';

/** The issuer (its Name, DER in hex) of a CRL and the serials (hex, as encoded) it revokes. */
export function crlEntries(der: Buffer): { issuer: string; serials: string[] } {
  const fields = children(expectTag(children(readExactly(der, Tag.sequence, 'CRL'))[0], Tag.sequence, 'tbsCertList'));
  // [version,] signature, issuer, thisUpdate, [nextUpdate,] [revokedCertificates,] [extensions]
  let i = fields[0]?.tag === Tag.integer ? 1 : 0;
  const issuer = expectTag(fields[i + 1], Tag.sequence, 'CRL issuer').raw.toString('hex');
  i += 3;
  if (fields[i]?.tag === Tag.utcTime || fields[i]?.tag === Tag.generalizedTime) i += 1;
  const revoked = fields[i]?.tag === Tag.sequence ? children(fields[i]!) : [];
  return { issuer, serials: revoked.map((entry) => expectTag(children(entry)[0], Tag.integer, 'revoked serial').value.toString('hex')) };
}

/**
 * What a set of CRLs revokes, as a digest: issuer and serial of every entry,
 * sorted. Two CRLs published at different times that revoke the same
 * certificates have the same digest; one more revocation changes it. A CRL
 * that cannot be read counts by its bytes.
 */
export function revocationDigest(crls: readonly Buffer[]): string {
  const lines: string[] = [];
  for (const crl of crls) {
    try {
      const { issuer, serials } = crlEntries(crl);
      lines.push(`${issuer}:`, ...serials.map((serial) => `${issuer}:${serial}`));
    } catch {
      lines.push(`unreadable:${createHash('sha256').update(crl).digest('hex')}`);
    }
  }
  return createHash('sha256')
    .update([...new Set(lines)].sort().join('\n'))
    .digest('hex');
}

/**
 * What a push job says of the server's CRLs, for `devices show`: nothing
 * while it holds the current ones (or no push got that far).
 */
export function crlStatusText(job: { crlDelivered?: boolean; crlWritable?: boolean }): string | undefined {
  if (job.crlDelivered !== false) return undefined;
  return job.crlWritable === false
    ? "the server does not hold the gateway's current CRLs, and its TrustList takes none over OPC UA: " +
        'install them by hand (edge-agent opcua client-bundle, issuers/crl)'
    : "the server does not hold the gateway's current CRLs yet: they go with its next push attempt";
}

/** What holds of a provisioned server's CRLs: `current`; `push` the new ones to it; it `cannot` take them over OPC UA. */
export type CrlDecision = 'current' | 'push' | 'cannot';

/**
 * For a server whose job is done and was last found holding the gateway's
 * CRLs (`revocations`, their digest; undefined when not known): whether
 * the CRLs now published (`current`) add a revocation, and if so what to
 * do. A server whose TrustList took no write (`writable` false) cannot be
 * sent them; one not yet tried is (the attempt finds out).
 */
export function crlDecision(server: { writable?: boolean; revocations?: string }, current: string): CrlDecision {
  if (server.revocations === current) return 'current';
  return server.writable === false ? 'cannot' : 'push';
}

export const CRL_PUSH_REASON = "the gateway's CRLs carry a revocation the server's do not: the new CRLs are pushed to it";
export const CRL_PENDING_REASON = "the gateway's CRLs carry a revocation the server's do not: its next push attempt sends the new CRLs";
export const CRL_CANNOT_REASON =
  "the gateway's CRLs carry a revocation the server's do not, and its TrustList takes no CRLs over OPC UA: " +
  'install them by hand (edge-agent opcua client-bundle, issuers/crl); until then the server does not know of the revocation';

/**
 * After a revocation (by the daemon, or by `edge-agent ca revoke` beside
 * it): every provisioned server whose CRLs lack it is either queued for a
 * push of the new CRLs (a push attempt on a server that presents our valid
 * certificate completes its TrustList and verifies it, issuing nothing) or,
 * where it cannot take them, marked as not holding current CRLs, with what
 * to do; a server whose job is not done is only marked (its next attempt
 * sends the current CRLs, or says it cannot). `current` gives the CRLs the servers' TrustLists are to hold (read
 * only when some server holds CRLs). Returns how many servers it changed.
 */
export function sweepCrls(deps: { store: Store; pushes: PushRepository; log: Logger }, current: () => readonly Buffer[]): number {
  let changed = 0;
  let digest: string | undefined;
  for (const server of deps.pushes.crlHolders()) {
    digest ??= revocationDigest(current());
    const decision = crlDecision(server, digest);
    if (decision === 'current') continue;
    const how = server.status !== 'done' ? 'pending' : decision;
    const reason = { push: CRL_PUSH_REASON, cannot: CRL_CANNOT_REASON, pending: CRL_PENDING_REASON }[how];
    deps.store.durable(() => deps.pushes.crlOutOfDate(server.deviceId, how, reason));
    deps.log[how === 'cannot' ? 'warn' : 'info']({ device: server.deviceId, decision: how }, 'OPC UA server lacks a revocation the gateway CRLs carry');
    changed += 1;
  }
  return changed;
}
