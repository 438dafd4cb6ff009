import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { CertError } from '../errors.js';
import { children, decodeOid, decodeUnsigned, expectTag, readExactly, Tag, type Node } from './der.js';
import { OID } from './oids.js';

export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa';

export interface PublicKeyInfo {
  type: KeyType;
  /** Modulus size for RSA; curve size for EC. */
  bits: number;
  /** The SubjectPublicKeyInfo DER, copied unchanged into the certificate. */
  spki: Buffer;
  /** The subjectPublicKey BIT STRING contents (without the unused-bits byte). */
  keyBits: Buffer;
  /** Hex SHA-256 of the SPKI: the key's identity for clone detection. */
  sha256: string;
  /** The key imported for node:crypto (as a JWK, which is the fastest import). */
  key(): KeyObject;
}

const b64url = (b: Buffer) => b.toString('base64url');

const CURVES: Record<string, { type: KeyType; bits: number; crv: string; size: number }> = {
  [OID.prime256v1]: { type: 'ec-p256', bits: 256, crv: 'P-256', size: 32 },
  [OID.secp384r1]: { type: 'ec-p384', bits: 384, crv: 'P-384', size: 48 },
};

/**
 * Analyses a SubjectPublicKeyInfo: only P-256, P-384 and RSA with at least
 * 2048 bits and a public exponent of 65537 (or another odd exponent from 3
 * to 2^32) are accepted. Everything else is refused with a specific code.
 */
export function analyseSpki(spkiNode: Node): PublicKeyInfo {
  const [algorithm, subjectPublicKey] = children(spkiNode);
  const algParts = children(expectTag(algorithm, Tag.sequence, 'public key algorithm'));
  const algOid = decodeOid(expectTag(algParts[0], Tag.oid, 'public key algorithm OID'));
  const bitString = expectTag(subjectPublicKey, Tag.bitString, 'subjectPublicKey');
  if (bitString.value[0] !== 0) throw new CertError('CSR_MALFORMED', 'subjectPublicKey has unused bits');
  const keyBits = bitString.value.subarray(1);
  const spki = Buffer.from(spkiNode.raw);
  const sha256 = createHash('sha256').update(spki).digest('hex');

  if (algOid === OID.ecPublicKey) {
    const curveOid = algParts[1]?.tag === Tag.oid ? decodeOid(algParts[1]) : '(parameters not a named curve)';
    const curve = CURVES[curveOid];
    if (!curve) throw new CertError('KEY_TYPE_UNSUPPORTED', `elliptic curve ${curveOid} is not accepted; use P-256 or P-384`);
    if (keyBits.length !== 1 + 2 * curve.size || keyBits[0] !== 0x04) {
      throw new CertError('CSR_MALFORMED', `the ${curve.crv} public key is not an uncompressed point`);
    }
    const x = keyBits.subarray(1, 1 + curve.size);
    const y = keyBits.subarray(1 + curve.size);
    return {
      type: curve.type,
      bits: curve.bits,
      spki,
      keyBits,
      sha256,
      key: () => createPublicKey({ key: { kty: 'EC', crv: curve.crv, x: b64url(x), y: b64url(y) }, format: 'jwk' }),
    };
  }
  if (algOid === OID.rsaEncryption) {
    const rsaKey = readExactly(keyBits, Tag.sequence, 'RSAPublicKey');
    const [nNode, eNode] = children(rsaKey);
    const n = decodeUnsigned(expectTag(nNode, Tag.integer, 'RSA modulus'));
    const e = decodeUnsigned(expectTag(eNode, Tag.integer, 'RSA exponent'));
    const bits = n.length * 8 - Math.clz32(n[0]!) + 24;
    if (bits < 2048) throw new CertError('KEY_TOO_WEAK', `RSA key of ${bits} bits is too weak; at least 2048 bits are required`);
    if (bits > 8192) throw new CertError('KEY_TYPE_UNSUPPORTED', `RSA key of ${bits} bits is larger than the 8192 accepted`);
    const exponent = e.length > 5 ? Infinity : e.reduce((v, byte) => v * 256 + byte, 0);
    if (exponent < 3 || exponent > 2 ** 32 || exponent % 2 === 0) {
      throw new CertError('KEY_TOO_WEAK', `RSA public exponent ${e.toString('hex')} is not sane; use 65537`);
    }
    return {
      type: 'rsa',
      bits,
      spki,
      keyBits,
      sha256,
      key: () => createPublicKey({ key: { kty: 'RSA', n: b64url(n), e: b64url(e) }, format: 'jwk' }),
    };
  }
  throw new CertError('KEY_TYPE_UNSUPPORTED', `public key algorithm ${algOid} is not accepted; use EC P-256/P-384 or RSA`);
}
