import {
  bitString,
  children,
  decodeOid,
  decodeUnsigned,
  explicit,
  read,
  readExactly,
  sequence,
  smallInteger,
  Tag,
  time,
  tlv,
  unsignedInteger,
} from './x509/der.js';
import { extension } from './x509/extensions.js';
import { OID } from './x509/oids.js';
import { toPem } from './x509/pem.js';
import { decodeTime } from './x509/certificate.js';
import type { IssuingCa } from './issuer.js';
import { REVOCATION_REASON_CODES, type RevokedEntry } from './store.js';

/** What signing a CRL needs of a CA: an issuing CA, or the root for its authority revocation list. */
export type CrlSigner = Pick<IssuingCa, 'subjectName' | 'aki' | 'signatureAlgorithm' | 'key'>;

/** RFC 5280 CRLReason codes, with cACompromise for the root's list of revoked CAs. */
const CRL_REASON_CODES: Record<CrlEntry['reason'], number> = { ...REVOCATION_REASON_CODES, cACompromise: 2 };

/** One revoked certificate as a CRL lists it. */
export type CrlEntry = Omit<RevokedEntry, 'reason'> & { reason: RevokedEntry['reason'] | 'cACompromise' };

/**
 * A v2 CRL (RFC 5280 5.1) for one CA, with the CRL number and authority key
 * identifier extensions and a reason code on each entry (left out for
 * `unspecified`, as 5.3.1 asks).
 */
export function buildCrl(issuer: CrlSigner, revoked: CrlEntry[], crlNumber: number, thisUpdate: Date, nextUpdate: Date): { der: Buffer; pem: string } {
  const entries = revoked.map((r) => {
    const reason = CRL_REASON_CODES[r.reason];
    const ext = reason === 0 ? [] : [sequence(extension(OID.crlReason, false, tlv(0x0a, Buffer.from([reason]))))];
    return sequence(unsignedInteger(Buffer.from(r.serial, 'hex')), time(r.revokedAt), ...ext);
  });
  const tbs = sequence(
    smallInteger(1),
    issuer.signatureAlgorithm,
    issuer.subjectName,
    time(thisUpdate),
    time(nextUpdate),
    ...(entries.length > 0 ? [sequence(...entries)] : []),
    explicit(0, sequence(issuer.aki, extension(OID.crlNumber, false, smallInteger(crlNumber)))),
  );
  const der = sequence(tbs, issuer.signatureAlgorithm, bitString(issuer.key.sign(tbs)));
  return { der, pem: toPem('X509 CRL', der) };
}

/**
 * The issuer Name of a CRL (DER, as encoded), read strictly enough to find
 * it: which CA a CRL someone else holds belongs to.
 */
export function crlIssuerName(der: Buffer): Buffer {
  const tbs = children(readExactly(der, Tag.sequence, 'CRL'))[0];
  if (!tbs || tbs.tag !== Tag.sequence) throw new Error('a CRL starts with its tbsCertList');
  const fields = children(tbs);
  // version is optional (v1 CRLs leave it out), then the signature algorithm, then the issuer.
  const issuer = fields[fields[0]?.tag === Tag.integer ? 2 : 1];
  if (!issuer || issuer.tag !== Tag.sequence) throw new Error('the CRL has no issuer name');
  return Buffer.from(issuer.raw);
}

/** thisUpdate, nextUpdate and CRL number of a CRL (DER): whether it is due to be signed again, and what number comes next. */
export function crlInfo(der: Buffer): { thisUpdate: Date; nextUpdate: Date; crlNumber?: number } {
  const tbs = children(readExactly(der, Tag.sequence, 'CRL'))[0];
  if (!tbs || tbs.tag !== Tag.sequence) throw new Error('a CRL starts with its tbsCertList');
  const fields = children(tbs);
  const at = fields[0]?.tag === Tag.integer ? 3 : 2;
  const thisUpdate = fields[at];
  const nextUpdate = fields[at + 1];
  if (!thisUpdate || !nextUpdate || (nextUpdate.tag !== Tag.utcTime && nextUpdate.tag !== Tag.generalizedTime)) throw new Error('the CRL has no nextUpdate');
  let crlNumber: number | undefined;
  const extensions = fields.find((f) => f.tag === 0xa0);
  for (const ext of extensions ? children(children(extensions)[0]!) : []) {
    const [id, value] = children(ext);
    if (id && value && decodeOid(id) === OID.crlNumber) {
      const n = decodeUnsigned(read(value.value));
      crlNumber = n.length <= 6 ? n.reduce((v, b) => v * 256 + b, 0) : undefined;
    }
  }
  return { thisUpdate: decodeTime(thisUpdate), nextUpdate: decodeTime(nextUpdate), ...(crlNumber === undefined ? {} : { crlNumber }) };
}
