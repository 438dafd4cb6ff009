import { verify } from 'node:crypto';
import { CertError } from '../errors.js';
import { children, decodeOid, DerError, expectTag, readExactly, Tag, type Node } from './der.js';
import { decodeName } from './name.js';
import { OID } from './oids.js';
import { derFrom } from './pem.js';
import { analyseSpki, type PublicKeyInfo } from './publicKey.js';

/** Larger than any honest CSR (an RSA-8192 CSR with a few SANs is about 1.5 KiB of DER). */
export const MAX_CSR_BYTES = 16 * 1024;

export interface RequestedExtensions {
  /** The request asked for CA:TRUE in basicConstraints. */
  ca: boolean;
  /** The request asked for keyCertSign or cRLSign in keyUsage. */
  certSign: boolean;
  /** URIs in a requested subjectAltName (an OPC UA server's applicationUri); read to be checked, never copied. */
  uris: string[];
}

export interface ParsedCsr {
  subject: string;
  /** The subject's CN values, decoded (a CSR may carry none, or several). */
  commonNames: string[];
  /** The whole CSR as DER: what a signature over "the CSR" covers. */
  der: Buffer;
  publicKey: PublicKeyInfo;
  requested: RequestedExtensions;
  /** The signed part, its algorithm and the signature, for proof of possession. */
  tbs: Buffer;
  signatureAlgorithm: string;
  signature: Buffer;
}

const SIGNATURE_HASH: Record<string, { hash: string; family: 'ec' | 'rsa' }> = {
  [OID.ecdsaWithSha256]: { hash: 'sha256', family: 'ec' },
  [OID.ecdsaWithSha384]: { hash: 'sha384', family: 'ec' },
  [OID.sha256WithRsa]: { hash: 'sha256', family: 'rsa' },
  [OID.sha384WithRsa]: { hash: 'sha384', family: 'rsa' },
  [OID.sha512WithRsa]: { hash: 'sha512', family: 'rsa' },
};

/** Signature algorithms a CSR may come with that are refused, named in the refusal. */
const REFUSED_SIGNATURES: Record<string, string> = {
  '1.2.840.113549.1.1.4': 'md5WithRSAEncryption',
  '1.2.840.113549.1.1.5': 'sha1WithRSAEncryption',
  '1.2.840.113549.1.1.14': 'sha224WithRSAEncryption',
  [OID.rsassaPss]: 'RSASSA-PSS',
  '1.2.840.10045.4.1': 'ecdsa-with-SHA1',
  '1.2.840.10045.4.3.1': 'ecdsa-with-SHA224',
  '1.2.840.10045.4.3.4': 'ecdsa-with-SHA512',
  '1.3.101.112': 'Ed25519',
  '1.3.101.113': 'Ed448',
};

const ACCEPTED_SIGNATURES = 'ecdsa-with-SHA256, ecdsa-with-SHA384, sha256WithRSAEncryption, sha384WithRSAEncryption and sha512WithRSAEncryption';

function unsupportedAlgorithm(algOid: string): CertError {
  return new CertError(
    'CSR_SIGNATURE_ALGORITHM_UNSUPPORTED',
    `CSR signature algorithm ${REFUSED_SIGNATURES[algOid] ?? algOid} is not accepted; sign it with ${ACCEPTED_SIGNATURES}`,
    {
      details: { algorithm: algOid },
    },
  );
}

function malformed(message: string): never {
  throw new CertError('CSR_MALFORMED', message);
}

/**
 * Reads the attributes strictly (each a SEQUENCE of an OID and a SET; each
 * requested extension a SEQUENCE of OID, an optional TRUE, an OCTET STRING)
 * and notes whether the request asks to be a CA. What is asked is never
 * copied into a certificate: the profile decides.
 */
function requestedExtensions(attributes: Node): RequestedExtensions {
  const out: RequestedExtensions = { ca: false, certSign: false, uris: [] };
  for (const attribute of children(attributes)) {
    const parts = attribute.tag === Tag.sequence ? children(attribute) : [];
    if (parts.length !== 2 || parts[0]!.tag !== Tag.oid || parts[1]!.tag !== Tag.set) malformed('a CSR attribute is not a type and a SET of values');
    if (decodeOid(parts[0]!) !== OID.extensionRequest) continue;
    for (const extensions of children(parts[1]!)) {
      for (const extension of children(expectTag(extensions, Tag.sequence, 'requested extensions'))) {
        const fields = extension.tag === Tag.sequence ? children(extension) : [];
        if (fields.length < 2 || fields.length > 3) malformed('a requested extension has the wrong number of fields');
        const id = decodeOid(expectTag(fields[0], Tag.oid, 'extension id'));
        if (fields.length === 3) {
          const critical = expectTag(fields[1], Tag.boolean, 'extension critical flag');
          // DER: TRUE is 0xFF, and FALSE (the default) is left out.
          if (critical.value.length !== 1 || critical.value[0] !== 0xff) malformed('an extension critical flag is not DER TRUE');
        }
        const valueNode = expectTag(fields[fields.length - 1], Tag.octetString, 'extension value');
        const inner = readExactly(valueNode.value, valueNode.value[0] ?? 0, 'extension');
        if (id === OID.basicConstraints) {
          const first = children(inner)[0];
          out.ca ||= first?.tag === Tag.boolean && first.value[0] !== 0;
        } else if (id === OID.keyUsage) {
          // keyCertSign is bit 5, cRLSign bit 6 of the first byte (bit 0 is the top bit).
          const byte = inner.value[1] ?? 0;
          out.certSign ||= (byte & 0x04) !== 0 || (byte & 0x02) !== 0;
        } else if (id === OID.subjectAltName) {
          // GeneralName uniformResourceIdentifier is [6] IA5String.
          for (const name of children(expectTag(inner, Tag.sequence, 'subjectAltName'))) {
            if (name.tag !== 0x86) continue;
            const uri = name.value.toString('latin1');
            if (!/^[\x21-\x7e]+$/.test(uri)) malformed('a requested SAN URI holds characters outside printable ASCII');
            out.uris.push(uri);
          }
        }
      }
    }
  }
  return out;
}

/**
 * Parses a PKCS#10 CSR (PEM or DER) without trusting it: size cap, strict
 * DER, names free of control characters, an accepted key type and size.
 * The signature is checked separately by `verifyCsr`; callers take both at once
 * from `prepare()` (certs/request.ts).
 */
export function parseCsr(input: string | Buffer): ParsedCsr {
  const size = Buffer.isBuffer(input) ? input.length : Buffer.byteLength(input);
  if (size > MAX_CSR_BYTES * 2) throw new CertError('CSR_TOO_LARGE', `CSR of ${size} bytes is larger than the ${MAX_CSR_BYTES * 2} accepted`);
  let der: Buffer;
  try {
    der = derFrom(input, ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST'], 'CSR');
  } catch (err) {
    throw new CertError('CSR_MALFORMED', 'CSR is neither PEM ("CERTIFICATE REQUEST") nor DER', { cause: err });
  }
  if (der.length > MAX_CSR_BYTES) throw new CertError('CSR_TOO_LARGE', `CSR of ${der.length} bytes is larger than the ${MAX_CSR_BYTES} accepted`);
  try {
    const root = readExactly(der, Tag.sequence, 'CSR');
    const top = children(root);
    if (top.length !== 3) throw new CertError('CSR_MALFORMED', 'a CSR holds exactly the request, the signature algorithm and the signature');
    const [info, algorithm, signature] = top;
    const infoNode = expectTag(info, Tag.sequence, 'certificationRequestInfo');
    const body = children(infoNode);
    if (body.length !== 4) throw new CertError('CSR_MALFORMED', 'the request body must hold exactly version, subject, public key and attributes');
    const [version, subject, spki, attributes] = body;
    const v = expectTag(version, Tag.integer, 'CSR version');
    if (v.value.length !== 1 || v.value[0] !== 0) throw new CertError('CSR_MALFORMED', 'CSR version is not 1 (0)');
    const name = decodeName(expectTag(subject, Tag.sequence, 'CSR subject'), 'CSR subject');
    const publicKey = analyseSpki(expectTag(spki, Tag.sequence, 'CSR public key'));
    expectTag(attributes, 0xa0, 'CSR attributes [0]');
    const algParts = children(expectTag(algorithm, Tag.sequence, 'CSR signature algorithm'));
    const algOid = decodeOid(expectTag(algParts[0], Tag.oid, 'CSR signature algorithm'));
    const known = SIGNATURE_HASH[algOid];
    // ECDSA identifiers have no parameters; RSA ones have NULL (or, from some encoders, none).
    // Those of algorithms refused anyway (RSASSA-PSS has a SEQUENCE) are not judged: the refusal names the algorithm.
    const params = algParts.slice(1);
    if (known && (params.length > 1 || (params.length === 1 && (known.family !== 'rsa' || params[0]!.tag !== Tag.null || params[0]!.value.length !== 0)))) {
      throw new CertError('CSR_MALFORMED', 'CSR signature algorithm has parameters it must not have');
    }
    if (!known && params.length > 1) throw new CertError('CSR_MALFORMED', 'CSR signature algorithm holds more than an identifier and parameters');
    const sig = expectTag(signature, Tag.bitString, 'CSR signature');
    if (sig.value[0] !== 0) throw new CertError('CSR_MALFORMED', 'CSR signature has unused bits');
    const requested = requestedExtensions(attributes!);
    // Every structural check has passed: what is left wrong is the algorithm alone.
    if (!known) throw unsupportedAlgorithm(algOid);
    return {
      subject: name.text,
      commonNames: name.attributes.filter((a) => a.type === 'CN').map((a) => a.value),
      der,
      publicKey,
      requested,
      tbs: infoNode.raw,
      signatureAlgorithm: algOid,
      signature: sig.value.subarray(1),
    };
  } catch (err) {
    if (err instanceof CertError) throw err;
    if (err instanceof DerError) throw new CertError('CSR_MALFORMED', `CSR is not valid DER: ${err.message}`, { cause: err });
    throw err;
  }
}

/** Proof of possession: the CSR is signed by the private key of the public key it carries. */
export function verifyCsr(csr: ParsedCsr): void {
  const alg = SIGNATURE_HASH[csr.signatureAlgorithm];
  if (!alg) throw unsupportedAlgorithm(csr.signatureAlgorithm);
  const keyFamily = csr.publicKey.type === 'rsa' ? 'rsa' : 'ec';
  if (alg.family !== keyFamily) throw new CertError('CSR_SIGNATURE_INVALID', 'CSR signature algorithm does not match its key type');
  let ok = false;
  try {
    ok = verify(alg.hash, csr.tbs, csr.publicKey.key(), csr.signature);
  } catch (err) {
    throw new CertError('CSR_SIGNATURE_INVALID', 'CSR signature cannot be verified', { cause: err });
  }
  if (!ok) throw new CertError('CSR_SIGNATURE_INVALID', 'CSR signature does not verify: the requester does not hold the private key');
}
