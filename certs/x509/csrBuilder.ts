import type { KeyBackend } from '../keys/backend.js';
import { signatureAlgorithm } from './certificate.js';
import { bitString, oid, sequence, setOf, smallInteger, tlv } from './der.js';
import { OID } from './oids.js';
import { toPem } from './pem.js';

/** A PKCS#10 CSR signed by `key`, with an extensionRequest when `extensions` are given. */
export function buildCsr(key: KeyBackend, subjectName: Buffer, extensions: Buffer[] = []): string {
  const spki = key.publicKey.export({ type: 'spki', format: 'der' });
  const attributes = extensions.length > 0 ? tlv(0xa0, sequence(oid(OID.extensionRequest), setOf(sequence(...extensions)))) : tlv(0xa0);
  const info = sequence(smallInteger(0), subjectName, spki, attributes);
  const sigAlg = signatureAlgorithm(key.family, key.hash);
  return toPem('CERTIFICATE REQUEST', sequence(info, sigAlg, bitString(key.sign(info))));
}
