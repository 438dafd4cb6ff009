import { randomBytes } from 'node:crypto';
import {
  children,
  decodeUnsigned,
  expectTag,
  explicit,
  nullValue,
  oid,
  readExactly,
  sequence,
  smallInteger,
  Tag,
  time,
  unsignedInteger,
  bitString,
  type Node,
} from './der.js';
import { parseExtensions, type ParsedExtensions } from './extensions.js';
import { OID } from './oids.js';
import { derFrom } from './pem.js';

export type SignatureHash = 'sha256' | 'sha384';

/** AlgorithmIdentifier of the signature a key of this family makes with this hash. */
export function signatureAlgorithm(family: 'ec' | 'rsa', hash: SignatureHash): Buffer {
  if (family === 'ec') return sequence(oid(hash === 'sha256' ? OID.ecdsaWithSha256 : OID.ecdsaWithSha384));
  return sequence(oid(hash === 'sha256' ? OID.sha256WithRsa : OID.sha384WithRsa), nullValue);
}

/**
 * A serial number: 128 random bits read as a positive integer. The first
 * byte is never zero, so the value always has at least 121 significant bits
 * (CA/Browser Forum asks for 64), and a leading 0x00 keeps it positive.
 */
export function randomSerial(): Buffer {
  const bytes = randomBytes(16);
  if (bytes[0] === 0) bytes[0] = 1;
  return bytes;
}

export interface TbsFields {
  serial: Buffer;
  /** Encoded AlgorithmIdentifier; must match the one around the signature. */
  signatureAlgorithm: Buffer;
  /** The issuer's subject, copied byte for byte from its certificate. */
  issuerName: Buffer;
  notBefore: Date;
  notAfter: Date;
  subjectName: Buffer;
  /** SubjectPublicKeyInfo DER, copied from the request. */
  spki: Buffer;
  /** Encoded Extension SEQUENCEs. */
  extensions: Buffer[];
}

const VERSION_3 = explicit(0, smallInteger(2));

export function encodeTbs(f: TbsFields): Buffer {
  return sequence(
    VERSION_3,
    unsignedInteger(f.serial),
    f.signatureAlgorithm,
    f.issuerName,
    sequence(time(f.notBefore), time(f.notAfter)),
    f.subjectName,
    f.spki,
    explicit(3, sequence(...f.extensions)),
  );
}

/** Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING } */
export function assembleCertificate(tbs: Buffer, signatureAlgorithmDer: Buffer, signature: Buffer): Buffer {
  return sequence(tbs, signatureAlgorithmDer, bitString(signature));
}

/** The parts of a certificate the CA reads back: for lint, for CA files and for imports. */
export interface CertificateParts {
  der: Buffer;
  tbs: Buffer;
  serial: Buffer;
  issuerName: Buffer;
  subjectName: Buffer;
  notBefore: Date;
  notAfter: Date;
  spki: Node;
  extensions: ParsedExtensions;
}

/** A UTCTime or GeneralizedTime (whole seconds, Z) as a Date. */
export function decodeTime(node: Node): Date {
  const text = node.value.toString('ascii');
  const m = node.tag === Tag.utcTime ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text) : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (!m) throw new Error(`unsupported time ${text}`);
  let year = Number(m[1]);
  if (node.tag === Tag.utcTime) year += year < 50 ? 2000 : 1900;
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

export function parseCertificate(input: string | Buffer): CertificateParts {
  const der = derFrom(input, ['CERTIFICATE'], 'certificate');
  const root = readExactly(der, Tag.sequence, 'certificate');
  const tbs = expectTag(children(root)[0], Tag.sequence, 'tbsCertificate');
  const parts = children(tbs);
  const offset = parts[0]?.tag === 0xa0 ? 1 : 0;
  const [serial, , issuer, validity, subject, spki] = parts.slice(offset);
  const [notBefore, notAfter] = children(expectTag(validity, Tag.sequence, 'validity'));
  const extensions = parts.slice(offset + 6).find((p) => p.tag === 0xa3);
  return {
    der,
    tbs: tbs.raw,
    serial: decodeUnsigned(expectTag(serial, Tag.integer, 'serial')),
    issuerName: expectTag(issuer, Tag.sequence, 'issuer').raw,
    subjectName: expectTag(subject, Tag.sequence, 'subject').raw,
    notBefore: decodeTime(notBefore!),
    notAfter: decodeTime(notAfter!),
    spki: expectTag(spki, Tag.sequence, 'subjectPublicKeyInfo'),
    extensions: parseExtensions(extensions),
  };
}
