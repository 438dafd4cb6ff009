import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import type { SignatureHash } from '../x509/certificate.js';

export type CaKeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096';
export const CA_KEY_TYPES: readonly CaKeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'];

/**
 * Where a CA's private key lives and how it signs. The authority sees only
 * this interface, so a PKCS#11 token or a TPM can replace the software key
 * without any change to issuance.
 */
export interface KeyBackend {
  readonly family: 'ec' | 'rsa';
  /** The hash this key signs with: SHA-384 for P-384, SHA-256 otherwise. */
  readonly hash: SignatureHash;
  readonly publicKey: KeyObject;
  /** A signature over `data` as X.509 carries it (DER ECDSA, PKCS#1 v1.5 RSA). */
  sign(data: Buffer): Buffer;
}

/** A private key held in process memory (loaded from an encrypted PKCS#8 file). */
export class SoftwareKey implements KeyBackend {
  readonly family: 'ec' | 'rsa';
  readonly hash: SignatureHash;
  readonly publicKey: KeyObject;

  /**
   * `keyType` is told, not read from the key: Node 20's asymmetricKeyDetails
   * getter can deadlock when a garbage collection runs inside it while
   * KeyGenJobs are being finalised (seen in `npm run bench`: the main thread
   * waits forever in KeyGenJob::~KeyGenJob under GetEcKeyDetail).
   */
  constructor(
    private readonly privateKey: KeyObject,
    keyType: 'ec-p256' | 'ec-p384' | 'rsa',
  ) {
    const type = privateKey.asymmetricKeyType;
    if (type !== 'ec' && type !== 'rsa') throw new Error(`CA keys must be EC or RSA, not ${type}`);
    if ((type === 'rsa') !== (keyType === 'rsa')) throw new Error(`key is ${type}, not ${keyType}`);
    this.family = type;
    this.hash = keyType === 'ec-p384' ? 'sha384' : 'sha256';
    this.publicKey = createPublicKey(privateKey);
  }

  sign(data: Buffer): Buffer {
    return sign(this.hash, data, this.privateKey);
  }

  /** The private key itself, for writing it to its file. */
  exportable(): KeyObject {
    return this.privateKey;
  }

  static generate(type: CaKeyType): SoftwareKey {
    const pair =
      type === 'ec-p256' || type === 'ec-p384'
        ? generateKeyPairSync('ec', { namedCurve: type === 'ec-p256' ? 'prime256v1' : 'secp384r1' })
        : generateKeyPairSync('rsa', { modulusLength: Number(type.slice(4)), publicExponent: 0x10001 });
    return new SoftwareKey(pair.privateKey, type.startsWith('rsa') ? 'rsa' : (type as 'ec-p256' | 'ec-p384'));
  }
}
