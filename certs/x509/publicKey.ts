import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { CertError } from '../errors.js';
import { bitString, children, decodeOid, decodeUnsigned, expectTag, nullValue, oid, readExactly, sequence, Tag, unsignedInteger, type Node } from './der.js';
import { OID } from './oids.js';

export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa';

export interface PublicKeyInfo {
  type: KeyType;
  /** Modulus size for RSA; curve size for EC. */
  bits: number;
  /**
   * The SubjectPublicKeyInfo re-encoded in its one canonical DER form: this,
   * never the requester's bytes, goes into the certificate, so one key has
   * one encoding and one fingerprint (clone detection cannot be dodged by
   * re-encoding the same key).
   */
  spki: Buffer;
  /** The subjectPublicKey BIT STRING contents of the canonical form. */
  keyBits: Buffer;
  /** Hex SHA-256 of the canonical SPKI: the key's identity for clone detection. */
  sha256: string;
  /** The key imported for node:crypto (as a JWK, the fastest import; it also checks an EC point is on its curve). */
  key(): KeyObject;
}

const b64url = (b: Buffer) => b.toString('base64url');

const CURVES: Record<string, { type: KeyType; bits: number; crv: string; size: number; oid: string }> = {
  [OID.prime256v1]: { type: 'ec-p256', bits: 256, crv: 'P-256', size: 32, oid: OID.prime256v1 },
  [OID.secp384r1]: { type: 'ec-p384', bits: 384, crv: 'P-384', size: 48, oid: OID.secp384r1 },
};

function malformed(message: string): never {
  throw new CertError('CSR_MALFORMED', message);
}

function info(type: KeyType, bits: number, spki: Buffer, keyBits: Buffer, key: () => KeyObject): PublicKeyInfo {
  return { type, bits, spki, keyBits, sha256: createHash('sha256').update(spki).digest('hex'), key };
}

/**
 * Analyses a SubjectPublicKeyInfo strictly (exact element counts, no extra
 * bytes) and returns its canonical encoding. Only P-256, P-384 and RSA of
 * 2048 to 8192 bits with an odd public exponent from 3 to 2^32 are accepted;
 * everything else is refused with a specific code.
 */
export function analyseSpki(spkiNode: Node): PublicKeyInfo {
  const parts = children(spkiNode);
  if (parts.length !== 2) malformed('the public key structure must have exactly an algorithm and a key');
  const [algorithm, subjectPublicKey] = parts;
  const algParts = children(expectTag(algorithm, Tag.sequence, 'public key algorithm'));
  const algOid = decodeOid(expectTag(algParts[0], Tag.oid, 'public key algorithm OID'));
  const bits = expectTag(subjectPublicKey, Tag.bitString, 'subjectPublicKey');
  if (bits.value[0] !== 0) malformed('subjectPublicKey has unused bits');
  const raw = bits.value.subarray(1);

  if (algOid === OID.ecPublicKey) {
    if (algParts.length !== 2) malformed('EC key parameters must be exactly one named curve');
    const curveOid = algParts[1]!.tag === Tag.oid ? decodeOid(algParts[1]!) : '(parameters not a named curve)';
    const curve = CURVES[curveOid];
    if (!curve) throw new CertError('KEY_TYPE_UNSUPPORTED', `elliptic curve ${curveOid} is not accepted; use P-256 or P-384`);
    if (raw.length !== 1 + 2 * curve.size || raw[0] !== 0x04) malformed(`the ${curve.crv} public key is not an uncompressed point`);
    const keyBits = Buffer.from(raw);
    const spki = sequence(sequence(oid(OID.ecPublicKey), oid(curve.oid)), bitString(keyBits));
    const x = b64url(keyBits.subarray(1, 1 + curve.size));
    const y = b64url(keyBits.subarray(1 + curve.size));
    return info(curve.type, curve.bits, spki, keyBits, () => createPublicKey({ key: { kty: 'EC', crv: curve.crv, x, y }, format: 'jwk' }));
  }
  if (algOid === OID.rsaEncryption) {
    // RFC 3279 asks for NULL parameters; some encoders leave them out. Either way the canonical form has NULL.
    if (algParts.length > 2 || (algParts.length === 2 && (algParts[1]!.tag !== Tag.null || algParts[1]!.value.length !== 0))) {
      malformed('RSA key parameters must be NULL');
    }
    const rsaKey = readExactly(raw, Tag.sequence, 'RSAPublicKey');
    const fields = children(rsaKey);
    if (fields.length !== 2) malformed('RSAPublicKey must hold exactly a modulus and an exponent');
    const n = decodeUnsigned(expectTag(fields[0], Tag.integer, 'RSA modulus'));
    const e = decodeUnsigned(expectTag(fields[1], Tag.integer, 'RSA exponent'));
    const size = n.length * 8 - Math.clz32(n[0]!) + 24;
    if (size < 2048) throw new CertError('KEY_TOO_WEAK', `RSA key of ${size} bits is too weak; at least 2048 bits are required`);
    if (size > 8192) throw new CertError('KEY_TYPE_UNSUPPORTED', `RSA key of ${size} bits is larger than the 8192 accepted`);
    const exponent = e.length > 5 ? Infinity : e.reduce((v, byte) => v * 256 + byte, 0);
    if (exponent < 3 || exponent > 2 ** 32 || exponent % 2 === 0) {
      throw new CertError('KEY_TOO_WEAK', `RSA public exponent ${e.toString('hex')} is not sane; use 65537`);
    }
    const keyBits = sequence(unsignedInteger(n), unsignedInteger(e));
    const spki = sequence(sequence(oid(OID.rsaEncryption), nullValue), bitString(keyBits));
    const nb = b64url(n);
    const eb = b64url(e);
    return info('rsa', size, spki, keyBits, () => createPublicKey({ key: { kty: 'RSA', n: nb, e: eb }, format: 'jwk' }));
  }
  throw new CertError('KEY_TYPE_UNSUPPORTED', `public key algorithm ${algOid} is not accepted; use EC P-256/P-384 or RSA`);
}
