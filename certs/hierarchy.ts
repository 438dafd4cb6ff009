import { X509Certificate, createHash, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { CertError } from './errors.js';
import { caFiles, verifyChain, type IssuerName } from './issuer.js';
import { SoftwareKey, type CaKeyType, type KeyBackend } from './keys/backend.js';
import { readKeyFile, writeFileAtomic, writeKeyFile } from './keys/fileKey.js';
import { assembleCertificate, encodeTbs, parseCertificate, randomSerial, signatureAlgorithm } from './x509/certificate.js';
import { authorityKeyIdentifier, basicConstraints, keyIdentifier, keyUsage, subjectKeyIdentifier } from './x509/extensions.js';
import { encodeName } from './x509/name.js';
import { buildCsr } from './x509/csrBuilder.js';
import { pemBlocks, toPem } from './x509/pem.js';
import { analyseSpki } from './x509/publicKey.js';
import { read } from './x509/der.js';
import { buildCrl } from './crl.js';

const DAY = 86_400_000;

export interface InitOptions {
  dir: string;
  passphrase: string | undefined;
  organization: string;
  /** Names the CAs: "<gatewayId> Root CA", "<gatewayId> Issuing CA EC". */
  gatewayId: string;
  rootKeyType: CaKeyType;
  /** Key type per issuing CA to create; leave one out to create only the other. */
  issuers: Partial<Record<IssuerName, CaKeyType>>;
  rootValidityDays: number;
  issuingValidityDays: number;
  now?: Date;
}

function spkiOf(key: KeyBackend): Buffer {
  return key.publicKey.export({ type: 'spki', format: 'der' });
}

function ski(spki: Buffer): Buffer {
  return keyIdentifier(analyseSpki(read(spki)).keyBits);
}

/** A CA certificate signed by `signer` (itself for a root). */
function caCertificate(o: {
  subjectName: Buffer;
  issuerName: Buffer;
  subjectKey: KeyBackend;
  signer: KeyBackend;
  signerSki: Buffer;
  pathLen?: number;
  notBefore: Date;
  notAfter: Date;
}): Buffer {
  const spki = spkiOf(o.subjectKey);
  const sigAlg = signatureAlgorithm(o.signer.family, o.signer.hash);
  const tbs = encodeTbs({
    serial: randomSerial(),
    signatureAlgorithm: sigAlg,
    issuerName: o.issuerName,
    notBefore: o.notBefore,
    notAfter: o.notAfter,
    subjectName: o.subjectName,
    spki,
    extensions: [
      basicConstraints(true, o.pathLen),
      keyUsage(['keyCertSign', 'cRLSign']),
      subjectKeyIdentifier(ski(spki)),
      authorityKeyIdentifier(o.signerSki),
    ],
  });
  return assembleCertificate(tbs, sigAlg, o.signer.sign(tbs));
}

const wholeSeconds = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);

/**
 * `edge-agent ca init`: a root (path length 1) and issuing CAs (path length
 * 0) under it, keys written encrypted when a passphrase is given. Refuses
 * to overwrite an existing CA.
 */
export function initCa(o: InitOptions): { rootPem: string; issuers: IssuerName[] } {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const existing = [caFiles.rootCert, caFiles.cert('ec'), caFiles.cert('rsa')].filter((f) => existsSync(join(o.dir, f)));
  if (existing.length > 0) {
    throw new CertError('CA_ALREADY_INITIALISED', `a CA already exists in ${o.dir} (${existing.join(', ')}); it is never overwritten`);
  }
  const now = o.now ?? new Date();
  const notBefore = wholeSeconds(new Date(now.getTime() - 300_000));
  const rootKey = SoftwareKey.generate(o.rootKeyType);
  const rootName = encodeName({ organization: o.organization, commonName: `${o.gatewayId} Root CA`.slice(0, 64) });
  const rootSki = ski(spkiOf(rootKey));
  const rootNotAfter = wholeSeconds(new Date(now.getTime() + o.rootValidityDays * DAY));
  const rootDer = caCertificate({ subjectName: rootName, issuerName: rootName, subjectKey: rootKey, signer: rootKey, signerSki: rootSki, pathLen: 1, notBefore, notAfter: rootNotAfter });
  const rootPem = toPem('CERTIFICATE', rootDer);

  const written: IssuerName[] = [];
  const pending: [string, string | Buffer | KeyObject][] = [];
  for (const [name, keyType] of Object.entries(o.issuers) as [IssuerName, CaKeyType][]) {
    const key = SoftwareKey.generate(keyType);
    const issuingNotAfter = new Date(Math.min(rootNotAfter.getTime(), wholeSeconds(new Date(now.getTime() + o.issuingValidityDays * DAY)).getTime()));
    const der = caCertificate({
      subjectName: encodeName({ organization: o.organization, commonName: `${o.gatewayId} Issuing CA ${name.toUpperCase()}`.slice(0, 64) }),
      issuerName: rootName,
      subjectKey: key,
      signer: rootKey,
      signerSki: rootSki,
      pathLen: 0,
      notBefore,
      notAfter: issuingNotAfter,
    });
    pending.push([caFiles.key(name), key.exportable()], [caFiles.chain(name), rootPem], [caFiles.cert(name), toPem('CERTIFICATE', der)]);
    written.push(name);
  }
  writeKeyFile(join(o.dir, caFiles.rootKey), rootKey.exportable(), o.passphrase);
  writeFileAtomic(join(o.dir, caFiles.rootCert), rootPem, 0o644);
  writeFileAtomic(join(o.dir, caFiles.rootCrl), rootCrl(rootPem, rootKey, now).pem, 0o644);
  // Keys first and certificates last: a CA counts as present once its certificate exists.
  for (const [file, content] of pending) {
    if (typeof content === 'string' || Buffer.isBuffer(content)) writeFileAtomic(join(o.dir, file), content, 0o644);
    else writeKeyFile(join(o.dir, file), content, o.passphrase);
  }
  return { rootPem, issuers: written };
}

/**
 * The root's CRL: it revokes no issuing CA, and is valid as long as the
 * root. Validators that insist on a CRL for every CA of a chain (OPC UA
 * stacks: node-opcua answers BadCertificateIssuerRevocationUnknown without
 * one) need it beside the issuing CAs' CRLs.
 */
export function rootCrl(rootPem: string, rootKey: KeyBackend, now: Date = new Date()): { der: Buffer; pem: string } {
  const parts = parseCertificate(rootPem);
  const signer = {
    subjectName: Buffer.from(parts.subjectName),
    aki: authorityKeyIdentifier(parts.extensions.subjectKeyId ?? keyIdentifier(analyseSpki(parts.spki).keyBits)),
    signatureAlgorithm: signatureAlgorithm(rootKey.family, rootKey.hash),
    key: rootKey,
  };
  return buildCrl(signer, [], 1, wholeSeconds(now), parts.notAfter);
}

/**
 * Writes root.crl where the root key is on the gateway and no root CRL is
 * there yet (CA directories made before it existed); returns whether it did.
 */
export function ensureRootCrl(dir: string, passphrase: string | undefined): boolean {
  const crlPath = join(dir, caFiles.rootCrl);
  const keyPath = join(dir, caFiles.rootKey);
  const certPath = join(dir, caFiles.rootCert);
  if (existsSync(crlPath) || !existsSync(keyPath) || !existsSync(certPath)) return false;
  const rootPem = readFileSync(certPath, 'utf8');
  const key = readKeyFile(keyPath, passphrase);
  writeFileAtomic(crlPath, rootCrl(rootPem, new SoftwareKey(key, analyseSpki(parseCertificate(rootPem).spki).type)).pem, 0o644);
  return true;
}

/**
 * `edge-agent ca request-intermediate`: a new key for an issuing CA (kept as
 * issuing-<name>.pending.key until the signed certificate is imported) and
 * a CSR asking for CA:TRUE, path length 0, keyCertSign and cRLSign.
 */
export function requestIntermediate(o: {
  dir: string;
  name: IssuerName;
  keyType: CaKeyType;
  organization: string;
  gatewayId: string;
  passphrase: string | undefined;
}): string {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const key = SoftwareKey.generate(o.keyType);
  const csrPem = buildCsr(
    key,
    encodeName({ organization: o.organization, commonName: `${o.gatewayId} Issuing CA ${o.name.toUpperCase()}`.slice(0, 64) }),
    [basicConstraints(true, 0), keyUsage(['keyCertSign', 'cRLSign'])],
  );
  writeKeyFile(join(o.dir, caFiles.pendingKey(o.name)), key.exportable(), o.passphrase);
  writeFileAtomic(join(o.dir, caFiles.csr(o.name)), csrPem, 0o644);
  return csrPem;
}

/**
 * `edge-agent ca import-intermediate`: installs an issuing CA certificate
 * signed elsewhere, after checking it against the pending (or current) key,
 * its CA flags and validity, and the chain up to a self-signed root. Nothing
 * is written unless every check passes.
 */
export function importIntermediate(o: {
  dir: string;
  name: IssuerName;
  certPem: string;
  chainPem?: string;
  passphrase: string | undefined;
  now?: Date;
}): { subject: string; notAfter: Date } {
  const pendingPath = join(o.dir, caFiles.pendingKey(o.name));
  const keyPath = existsSync(pendingPath) ? pendingPath : join(o.dir, caFiles.key(o.name));
  if (!existsSync(keyPath)) throw new CertError('INTERMEDIATE_INVALID', `no key waits for this certificate; run edge-agent ca request-intermediate --issuer ${o.name} first`);
  const key = readKeyFile(keyPath, o.passphrase);
  const certBlocks = pemBlocks(o.certPem).filter((b) => b.label === 'CERTIFICATE');
  if (certBlocks.length === 0) throw new CertError('INTERMEDIATE_INVALID', 'the file holds no PEM certificate');
  const certPem = toPem('CERTIFICATE', certBlocks[0]!.der);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new CertError('INTERMEDIATE_INVALID', 'the certificate cannot be parsed', { cause: err });
  }
  if (!cert.checkPrivateKey(key)) throw new CertError('INTERMEDIATE_INVALID', `the certificate does not match the key in ${keyPath}`);
  const parts = parseCertificate(certPem);
  if (!parts.extensions.ca || !parts.extensions.keyUsage.includes('keyCertSign')) {
    throw new CertError('INTERMEDIATE_INVALID', 'the certificate is not a CA certificate allowed to sign certificates (CA:TRUE, keyCertSign)');
  }
  const now = o.now ?? new Date();
  if (parts.notAfter <= now) throw new CertError('INTERMEDIATE_INVALID', `the certificate expired on ${parts.notAfter.toISOString()}`);
  if (parts.notBefore > now) throw new CertError('INTERMEDIATE_INVALID', `the certificate is not valid before ${parts.notBefore.toISOString()}`);
  const rest = [...certBlocks.slice(1), ...(o.chainPem ? pemBlocks(o.chainPem).filter((b) => b.label === 'CERTIFICATE') : [])].map((b) => toPem('CERTIFICATE', b.der));
  const localRoot = join(o.dir, caFiles.rootCert);
  const above = rest.length > 0 ? rest : existsSync(localRoot) ? [readFileSync(localRoot, 'utf8')] : [];
  if (above.length === 0) throw new CertError('INTERMEDIATE_INVALID', 'no chain given (--chain FILE) and no local root to chain to');
  const chain = verifyChain([certPem, ...above], 'imported intermediate');
  for (const c of chain.slice(1)) {
    if (new Date(c.validTo) <= now) throw new CertError('INTERMEDIATE_INVALID', `${c.subject.replace(/\n/g, ', ')} in the chain has expired`);
  }
  writeFileAtomic(join(o.dir, caFiles.chain(o.name)), above.join(''), 0o644);
  if (keyPath === pendingPath) renameSync(pendingPath, join(o.dir, caFiles.key(o.name)));
  writeFileAtomic(join(o.dir, caFiles.cert(o.name)), certPem, 0o644);
  return { subject: cert.subject.replace(/\n/g, ', '), notAfter: parts.notAfter };
}

export interface CaCertificateStatus {
  role: 'root' | `issuing-${IssuerName}`;
  subject: string;
  issuer: string;
  keyType: string;
  notBefore: string;
  notAfter: string;
  daysLeft: number;
  pathLength?: number;
  sha256: string;
  chain?: string[];
}

function describeKey(spki: ReturnType<typeof parseCertificate>['spki']): string {
  const info = analyseSpki(spki);
  return info.type === 'rsa' ? `RSA ${info.bits}` : info.type === 'ec-p256' ? 'EC P-256' : 'EC P-384';
}

/** `edge-agent ca status`: every CA certificate in the directory, with what expires when. */
export function caStatus(dir: string, now = new Date()): CaCertificateStatus[] {
  const out: CaCertificateStatus[] = [];
  const describe = (role: CaCertificateStatus['role'], path: string, chainPath?: string) => {
    if (!existsSync(path)) return;
    const pem = readFileSync(path, 'utf8');
    const cert = new X509Certificate(pem);
    const parts = parseCertificate(pem);
    out.push({
      role,
      subject: cert.subject.replace(/\n/g, ', '),
      issuer: cert.issuer.replace(/\n/g, ', '),
      keyType: describeKey(parts.spki),
      notBefore: parts.notBefore.toISOString(),
      notAfter: parts.notAfter.toISOString(),
      daysLeft: Math.floor((parts.notAfter.getTime() - now.getTime()) / DAY),
      ...(parts.extensions.pathLen === undefined ? {} : { pathLength: parts.extensions.pathLen }),
      sha256: createHash('sha256').update(parts.der).digest('hex'),
      ...(chainPath && existsSync(chainPath)
        ? { chain: pemBlocks(readFileSync(chainPath, 'utf8')).map((b) => new X509Certificate(b.der).subject.replace(/\n/g, ', ')) }
        : {}),
    });
  };
  describe('root', join(dir, caFiles.rootCert));
  for (const name of ['ec', 'rsa'] as const) describe(`issuing-${name}`, join(dir, caFiles.cert(name)), join(dir, caFiles.chain(name)));
  return out;
}
