import { createCipheriv, createDecipheriv, pbkdf2Sync, randomBytes } from 'node:crypto';
import {
  children,
  decodeOid,
  decodeUnsigned,
  DerError,
  expectTag,
  nullValue,
  octetString,
  oid,
  readExactly,
  sequence,
  smallInteger,
  Tag,
} from '../x509/der.js';

/**
 * PKCS#8 EncryptedPrivateKeyInfo with PBES2 (RFC 8018): PBKDF2 and an AES-CBC
 * cipher. Node's KeyObject.export encrypts with PBKDF2 at OpenSSL's default
 * of 2,048 iterations and cannot be told more, which a stolen CA directory
 * with a human passphrase does not survive; so the structure is built here,
 * and what it writes is what `openssl pkey` and `createPrivateKey` read.
 */

/** PBKDF2-HMAC-SHA256 iterations for CA keys: OWASP's 2023 figure. One key decrypt costs about 0.1-0.5 s. */
export const KEY_ENCRYPTION_ITERATIONS = 600_000;

/** Below this, a key file is reported as weakly encrypted (Node's and OpenSSL's default is 2,048). */
export const MIN_KEY_ENCRYPTION_ITERATIONS = 600_000;

const PBES2 = '1.2.840.113549.1.5.13';
const PBKDF2 = '1.2.840.113549.1.5.12';

const PRFS: Record<string, { name: string; digest: string }> = {
  '1.2.840.113549.2.7': { name: 'hmacWithSHA1', digest: 'sha1' },
  '1.2.840.113549.2.9': { name: 'hmacWithSHA256', digest: 'sha256' },
  '1.2.840.113549.2.10': { name: 'hmacWithSHA384', digest: 'sha384' },
  '1.2.840.113549.2.11': { name: 'hmacWithSHA512', digest: 'sha512' },
};
const HMAC_SHA256 = '1.2.840.113549.2.9';

const CIPHERS: Record<string, { name: string; keyLength: number }> = {
  '2.16.840.1.101.3.4.1.2': { name: 'aes-128-cbc', keyLength: 16 },
  '2.16.840.1.101.3.4.1.22': { name: 'aes-192-cbc', keyLength: 24 },
  '2.16.840.1.101.3.4.1.42': { name: 'aes-256-cbc', keyLength: 32 },
};
const AES_256_CBC = '2.16.840.1.101.3.4.1.42';

/** How an encrypted key file is protected, as its EncryptedPrivateKeyInfo says. */
export interface KeyEncryption {
  /** `PBES2/PBKDF2` when this module can read it, else the algorithm's OID (OpenSSL may still read it). */
  scheme: string;
  iterations?: number;
  prf?: string;
  cipher?: string;
}

interface Pbes2Params {
  salt: Buffer;
  iterations: number;
  prf: { name: string; digest: string };
  cipher: { name: string; keyLength: number };
  iv: Buffer;
  encrypted: Buffer;
}

/** Thrown for an EncryptedPrivateKeyInfo that is not well-formed (damaged or truncated). */
export class EncryptedKeyDamaged extends Error {}

/** Encrypts a PKCS#8 PrivateKeyInfo (DER) as an EncryptedPrivateKeyInfo (DER): PBKDF2-HMAC-SHA256, AES-256-CBC. */
export function encryptPkcs8(privateKeyInfo: Buffer, passphrase: string, iterations = KEY_ENCRYPTION_ITERATIONS): Buffer {
  const salt = randomBytes(16);
  const iv = randomBytes(16);
  const key = pbkdf2Sync(Buffer.from(passphrase, 'utf8'), salt, iterations, 32, 'sha256');
  const cipher = createCipheriv('aes-256-cbc', key, iv);
  const encrypted = Buffer.concat([cipher.update(privateKeyInfo), cipher.final()]);
  return sequence(
    sequence(
      oid(PBES2),
      sequence(
        // keyLength is left out: AES fixes it (RFC 8018 A.2); prf is not the SHA-1 default, so it is written.
        sequence(oid(PBKDF2), sequence(octetString(salt), smallInteger(iterations), sequence(oid(HMAC_SHA256), nullValue))),
        sequence(oid(AES_256_CBC), octetString(iv)),
      ),
    ),
    octetString(encrypted),
  );
}

/**
 * Reads the structure of an EncryptedPrivateKeyInfo. Throws EncryptedKeyDamaged
 * when it is not one (truncated, corrupted framing); returns undefined params
 * for a well-formed one with a scheme other than PBES2/PBKDF2/AES-CBC.
 */
function readStructure(der: Buffer): { encryption: KeyEncryption; params?: Pbes2Params } {
  try {
    const top = children(readExactly(der, Tag.sequence, 'EncryptedPrivateKeyInfo'));
    if (top.length !== 2) throw new DerError('EncryptedPrivateKeyInfo holds an algorithm and the encrypted data');
    const encrypted = expectTag(top[1], Tag.octetString, 'encryptedData').value;
    const alg = children(expectTag(top[0], Tag.sequence, 'encryptionAlgorithm'));
    const scheme = decodeOid(expectTag(alg[0], Tag.oid, 'encryption algorithm'));
    if (scheme !== PBES2) return { encryption: { scheme } };
    const [kdf, enc, ...extra] = children(expectTag(alg[1], Tag.sequence, 'PBES2 parameters'));
    if (extra.length > 0 || alg.length !== 2) throw new DerError('PBES2 parameters hold a key derivation and an encryption scheme');
    const kdfParts = children(expectTag(kdf, Tag.sequence, 'keyDerivationFunc'));
    const kdfOid = decodeOid(expectTag(kdfParts[0], Tag.oid, 'key derivation OID'));
    const encParts = children(expectTag(enc, Tag.sequence, 'encryptionScheme'));
    const cipherOid = decodeOid(expectTag(encParts[0], Tag.oid, 'cipher OID'));
    const cipher = CIPHERS[cipherOid];
    if (kdfOid !== PBKDF2 || !cipher) return { encryption: { scheme: `PBES2 ${kdfOid} ${cipherOid}` } };
    const iv = expectTag(encParts[1], Tag.octetString, 'cipher IV').value;
    if (encParts.length !== 2 || iv.length !== 16) throw new DerError('the AES-CBC parameters are one 16-byte IV');
    const fields = children(expectTag(kdfParts[1], Tag.sequence, 'PBKDF2 parameters'));
    const salt = expectTag(fields[0], Tag.octetString, 'PBKDF2 salt').value;
    const count = decodeUnsigned(expectTag(fields[1], Tag.integer, 'PBKDF2 iteration count'));
    if (count.length > 4) throw new DerError('PBKDF2 iteration count out of range');
    const iterations = count.reduce((n, b) => n * 256 + b, 0);
    let next = 2;
    if (fields[next]?.tag === Tag.integer) {
      const keyLength = decodeUnsigned(fields[next]!);
      if (keyLength.length !== 1 || keyLength[0] !== cipher.keyLength) throw new DerError('PBKDF2 key length does not fit the cipher');
      next++;
    }
    let prf = PRFS['1.2.840.113549.2.7']!;
    if (fields[next]) {
      const prfParts = children(expectTag(fields[next], Tag.sequence, 'PBKDF2 prf'));
      const prfOid = decodeOid(expectTag(prfParts[0], Tag.oid, 'PBKDF2 prf OID'));
      const known = PRFS[prfOid];
      if (!known) return { encryption: { scheme: `PBES2 PBKDF2 prf ${prfOid}`, iterations } };
      prf = known;
      next++;
    }
    if (fields.length !== next || iterations < 1) throw new DerError('PBKDF2 parameters are malformed');
    return {
      encryption: { scheme: 'PBES2/PBKDF2', iterations, prf: prf.name, cipher: cipher.name },
      params: { salt: Buffer.from(salt), iterations, prf, cipher, iv: Buffer.from(iv), encrypted: Buffer.from(encrypted) },
    };
  } catch (err) {
    if (err instanceof DerError) throw new EncryptedKeyDamaged(err.message);
    throw err;
  }
}

/** How an EncryptedPrivateKeyInfo (DER) is protected; throws EncryptedKeyDamaged when it is not well-formed. */
export function keyEncryption(der: Buffer): KeyEncryption {
  return readStructure(der).encryption;
}

/**
 * The first block of a PKCS#8 PrivateKeyInfo: SEQUENCE (short, 0x81 or 0x82
 * length), version INTEGER 0, then the algorithm SEQUENCE. Random bytes (a
 * wrong passphrase) match this with a chance of about 2^-40.
 */
function looksLikePkcs8(plain: Buffer): boolean {
  if (plain[0] !== 0x30) return false;
  const lengthBytes = plain[1]! < 0x80 ? 1 : plain[1] === 0x81 ? 2 : plain[1] === 0x82 ? 3 : 0;
  if (lengthBytes === 0) return false;
  const at = 1 + lengthBytes;
  return plain[at] === 0x02 && plain[at + 1] === 0x01 && plain[at + 2] === 0x00 && plain[at + 3] === 0x30;
}

export type DecryptOutcome =
  | { ok: true; privateKeyInfo: Buffer; encryption: KeyEncryption }
  | { ok: false; reason: 'wrong-passphrase' | 'damaged'; encryption: KeyEncryption }
  | { ok: false; reason: 'unsupported'; encryption: KeyEncryption };

/**
 * Decrypts a PBES2/PBKDF2/AES-CBC EncryptedPrivateKeyInfo and tells a wrong
 * passphrase from a damaged file: the first block decrypts to a PKCS#8
 * header exactly when the passphrase is right (and the IV and first block
 * are intact), so a right passphrase with bad padding or a bad structure
 * after it means the file is damaged. Without a MAC the two cannot be told
 * apart when the damage is in the first 32 bytes of the ciphertext or the
 * IV's first bytes; that is reported as a wrong passphrase.
 */
export function decryptPkcs8(der: Buffer, passphrase: string): DecryptOutcome {
  let structure: ReturnType<typeof readStructure>;
  try {
    structure = readStructure(der);
  } catch (err) {
    if (err instanceof EncryptedKeyDamaged) return { ok: false, reason: 'damaged', encryption: { scheme: 'unreadable' } };
    throw err;
  }
  const { encryption, params } = structure;
  if (!params) return { ok: false, reason: 'unsupported', encryption };
  if (params.encrypted.length === 0 || params.encrypted.length % 16 !== 0) return { ok: false, reason: 'damaged', encryption };
  const key = pbkdf2Sync(Buffer.from(passphrase, 'utf8'), params.salt, params.iterations, params.cipher.keyLength, params.prf.digest);
  const decipher = createDecipheriv(params.cipher.name, key, params.iv);
  decipher.setAutoPadding(false);
  const plain = Buffer.concat([decipher.update(params.encrypted), decipher.final()]);
  if (!looksLikePkcs8(plain)) return { ok: false, reason: 'wrong-passphrase', encryption };
  const pad = plain[plain.length - 1]!;
  if (pad < 1 || pad > 16 || !plain.subarray(plain.length - pad).every((b) => b === pad)) return { ok: false, reason: 'damaged', encryption };
  const privateKeyInfo = plain.subarray(0, plain.length - pad);
  try {
    readExactly(privateKeyInfo, Tag.sequence, 'PrivateKeyInfo');
  } catch {
    return { ok: false, reason: 'damaged', encryption };
  }
  return { ok: true, privateKeyInfo, encryption };
}
