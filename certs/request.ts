import { parseCsr, verifyCsr, type ParsedCsr, type RequestedExtensions } from './x509/csr.js';
import type { PublicKeyInfo } from './x509/publicKey.js';

/**
 * A certificate request read and checked once: the CSR parsed strictly
 * (size cap, strict DER, clean names, an accepted key) and its proof of
 * possession verified. Every later step (the profile's validators, the
 * enrollment policy, issuance) reads this, never the CSR again. Only
 * `PreparedRequest.from` makes one, so holding one means the checks passed.
 * What the requester asked for (names, CA flags) is here to be judged,
 * never copied: the certificate comes from the profile's template.
 */
export class PreparedRequest {
  private constructor(private readonly csr: ParsedCsr) {}

  /** Parses (PEM or DER) and verifies the signature; throws a CertError (CSR_*, KEY_*) otherwise. */
  static from(input: string | Buffer): PreparedRequest {
    const csr = parseCsr(input);
    verifyCsr(csr);
    return new PreparedRequest(csr);
  }

  /** The CSR as DER: what a signature over "the CSR" covers (a manufacturer claim). */
  get der(): Buffer {
    return this.csr.der;
  }

  get publicKey(): PublicKeyInfo {
    return this.csr.publicKey;
  }

  /** Hex SHA-256 of the SubjectPublicKeyInfo: the key's identity in the store. */
  get spkiSha256(): string {
    return this.csr.publicKey.sha256;
  }

  /** The subject as text, as the requester wrote it. */
  get subject(): string {
    return this.csr.subject;
  }

  /** The subject's CN values (a CSR may carry none, or several). */
  get commonNames(): readonly string[] {
    return this.csr.commonNames;
  }

  /** What the requester asked for in its extension request. */
  get requested(): Readonly<RequestedExtensions> {
    return this.csr.requested;
  }
}

/** `PreparedRequest.from`: parse strictly and verify proof of possession, once. */
export function prepare(input: string | Buffer): PreparedRequest {
  return PreparedRequest.from(input);
}
