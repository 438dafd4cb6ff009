import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CertError } from './errors.js';
import { readKeyFile } from './keys/fileKey.js';
import { SoftwareKey, type KeyBackend } from './keys/backend.js';
import { revokedCas } from './revokedCas.js';
import { parseCertificate, signatureAlgorithm, type CertificateParts } from './x509/certificate.js';
import { authorityKeyIdentifier, keyIdentifier } from './x509/extensions.js';
import { pemBlocks, toPem } from './x509/pem.js';
import { analyseSpki } from './x509/publicKey.js';

export type IssuerName = 'ec' | 'rsa';

/** File names inside the CA directory. */
export const caFiles = {
  rootCert: 'root.crt',
  rootKey: 'root.key',
  /** The root's CRL (an authority revocation list): no issuing CA revoked. */
  rootCrl: 'root.crl',
  cert: (name: IssuerName) => `issuing-${name}.crt`,
  key: (name: IssuerName) => `issuing-${name}.key`,
  chain: (name: IssuerName) => `issuing-${name}.chain.pem`,
  pendingKey: (name: IssuerName) => `issuing-${name}.pending.key`,
  csr: (name: IssuerName) => `issuing-${name}.csr`,
};

/**
 * An issuing CA ready to sign: its key backend and everything about it that
 * each issuance would otherwise recompute (subject bytes, AKI extension,
 * signature AlgorithmIdentifier, the chain as PEM), parsed once at load.
 */
export class IssuingCa {
  readonly subjectName: Buffer;
  readonly aki: Buffer;
  readonly signatureAlgorithm: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The earliest end of validity of this CA and every CA above it: no certificate it issues may outlive it. */
  readonly chainNotAfter: Date;
  /** This CA's certificate and those above it, as PEM, issuing CA first. */
  readonly chainPem: string[];
  readonly parts: CertificateParts;

  constructor(
    readonly name: IssuerName,
    readonly certPem: string,
    above: string[],
    readonly key: KeyBackend,
    parts: CertificateParts = parseCertificate(certPem),
  ) {
    this.parts = parts;
    this.subjectName = Buffer.from(parts.subjectName);
    const ski = parts.extensions.subjectKeyId ?? keyIdentifier(analyseSpki(parts.spki).keyBits);
    this.aki = authorityKeyIdentifier(ski);
    this.signatureAlgorithm = signatureAlgorithm(key.family, key.hash);
    this.notBefore = parts.notBefore;
    this.notAfter = parts.notAfter;
    this.chainPem = [toPem('CERTIFICATE', parts.der), ...above];
    this.chainNotAfter = new Date(Math.min(parts.notAfter.getTime(), ...above.map((pem) => parseCertificate(pem).notAfter.getTime())));
  }

  /**
   * Loads `issuing-<name>` from the CA directory: refuses a key file others
   * can read, a key that does not match the certificate, a certificate that
   * is not a CA or was revoked (`ca revoke-issuing`), and a chain that does
   * not link up.
   */
  static load(dir: string, name: IssuerName, passphrase: string | undefined): IssuingCa | undefined {
    const certPath = join(dir, caFiles.cert(name));
    if (!existsSync(certPath)) return undefined;
    const keyPath = join(dir, caFiles.key(name));
    const privateKey = readKeyFile(keyPath, passphrase);
    const certPem = readFileSync(certPath, 'utf8');
    const cert = new X509Certificate(certPem);
    if (!cert.checkPrivateKey(privateKey)) {
      throw new CertError('CA_KEY_MISMATCH', `CA key ${keyPath} does not belong to the certificate ${certPath}`);
    }
    if (!cert.ca) throw new CertError('INTERMEDIATE_INVALID', `${certPath} is not a CA certificate`);
    const serial = parseCertificate(certPem).serial.toString('hex');
    if (revokedCas(dir).some((r) => r.issuer === name && r.serial === serial)) {
      // Left by a revocation cut short, or restored from a backup: it must never sign again.
      throw new CertError(
        'ISSUING_CA_REVOKED',
        `the ${name.toUpperCase()} issuing CA ${certPath} (serial ${serial}) is revoked; ` +
          `run edge-agent ca revoke-issuing --issuer ${name} again to finish replacing it`,
      );
    }
    const chainPath = join(dir, caFiles.chain(name));
    const above = existsSync(chainPath) ? pemBlocks(readFileSync(chainPath, 'utf8')).map((b) => toPem(b.label, b.der)) : [];
    verifyChain([certPem, ...above], certPath);
    const parts = parseCertificate(certPem);
    return new IssuingCa(name, certPem, above, new SoftwareKey(privateKey, analyseSpki(parts.spki).type), parts);
  }
}

/**
 * Checks a CA chain, issuing CA first: each certificate is signed by the
 * next and the last by itself; every certificate above the first is a CA
 * allowed to sign certificates whose path length limit leaves room for the
 * CAs below it (RFC 5280 4.2.1.9), as a validator of the leaves would check.
 */
export function verifyChain(pems: string[], what: string): X509Certificate[] {
  const certs = pems.map((p) => new X509Certificate(p));
  const extensions = pems.map((p) => parseCertificate(p).extensions);
  certs.forEach((cert, i) => {
    const parent = certs[i + 1] ?? cert;
    const name = cert.subject.replace(/\n/g, ', ');
    const ext = extensions[i]!;
    const parentExt = extensions[i + 1] ?? ext;
    if (parentExt.keyUsage.length > 0 && !parentExt.keyUsage.includes('keyCertSign')) {
      throw new CertError('INTERMEDIATE_INVALID', `${what}: ${parent.subject.replace(/\n/g, ', ')} in the chain may not sign certificates (no keyCertSign)`);
    }
    if (!cert.checkIssued(parent) || !cert.verify(parent.publicKey)) {
      throw new CertError('INTERMEDIATE_INVALID', `${what}: certificate ${i + 1} of the chain (${name}) is not signed by the next one`);
    }
    if (!ext.ca) throw new CertError('INTERMEDIATE_INVALID', `${what}: ${name} in the chain is not a CA`);
    if (ext.keyUsage.length > 0 && !ext.keyUsage.includes('keyCertSign')) {
      throw new CertError('INTERMEDIATE_INVALID', `${what}: ${name} in the chain may not sign certificates (no keyCertSign)`);
    }
    // Below certificate i sit i CA certificates (this chain's first i) before the leaf.
    if (ext.pathLen !== undefined && ext.pathLen < i) {
      throw new CertError('INTERMEDIATE_INVALID', `${what}: ${name} allows a path length of ${ext.pathLen}, but ${i} CA certificate(s) would sit below it`);
    }
  });
  return certs;
}
