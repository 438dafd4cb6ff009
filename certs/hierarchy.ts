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
import { DEFAULT_ROOT_CRL_VALIDITY_DAYS, writeRootCrl, type RootCa } from './root.js';
import { revokedCas } from './revokedCas.js';

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
  /** nextUpdate of the root CRL written with it (DEFAULT_ROOT_CRL_VALIDITY_DAYS). */
  rootCrlValidityDays?: number;
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
    extensions: [basicConstraints(true, o.pathLen), keyUsage(['keyCertSign', 'cRLSign']), subjectKeyIdentifier(ski(spki)), authorityKeyIdentifier(o.signerSki)],
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
  const rootDer = caCertificate({
    subjectName: rootName,
    issuerName: rootName,
    subjectKey: rootKey,
    signer: rootKey,
    signerSki: rootSki,
    pathLen: 1,
    notBefore,
    notAfter: rootNotAfter,
  });
  const rootPem = toPem('CERTIFICATE', rootDer);

  const written: IssuerName[] = [];
  const pending: [string, string | Buffer | KeyObject][] = [];
  const root = { subjectName: rootName, ski: rootSki, key: rootKey, notAfter: rootNotAfter, pem: rootPem };
  for (const [name, keyType] of Object.entries(o.issuers) as [IssuerName, CaKeyType][]) {
    const { key, certPem } = issuingCaUnder(root, {
      name,
      keyType,
      organization: o.organization,
      gatewayId: o.gatewayId,
      issuingValidityDays: o.issuingValidityDays,
      now,
    });
    pending.push([caFiles.key(name), key.exportable()], [caFiles.chain(name), rootPem], [caFiles.cert(name), certPem]);
    written.push(name);
  }
  writeKeyFile(join(o.dir, caFiles.rootKey), rootKey.exportable(), o.passphrase);
  writeFileAtomic(join(o.dir, caFiles.rootCert), rootPem, 0o644);
  writeRootCrl(o.dir, { certPem: rootPem, key: rootKey }, o.rootCrlValidityDays ?? DEFAULT_ROOT_CRL_VALIDITY_DAYS, now);
  // Keys first and certificates last: a CA counts as present once its certificate exists.
  for (const [file, content] of pending) {
    if (typeof content === 'string' || Buffer.isBuffer(content)) writeFileAtomic(join(o.dir, file), content, 0o644);
    else writeKeyFile(join(o.dir, file), content, o.passphrase);
  }
  return { rootPem, issuers: written };
}

/** An issuing CA (path length 0) under a root whose key is at hand; `generation` > 1 names a successor of revoked ones. */
function issuingCaUnder(
  root: { subjectName: Buffer; ski: Buffer; key: KeyBackend; notAfter: Date },
  o: { name: IssuerName; keyType: CaKeyType; organization: string; gatewayId: string; issuingValidityDays: number; now: Date; generation?: number },
): { key: SoftwareKey; certPem: string; subject: string; notAfter: Date } {
  const key = SoftwareKey.generate(o.keyType);
  const notAfter = new Date(Math.min(root.notAfter.getTime(), wholeSeconds(new Date(o.now.getTime() + o.issuingValidityDays * DAY)).getTime()));
  const suffix = (o.generation ?? 1) > 1 ? ` ${o.generation}` : '';
  const commonName = `${`${o.gatewayId} Issuing CA ${o.name.toUpperCase()}`.slice(0, 64 - suffix.length)}${suffix}`;
  const der = caCertificate({
    subjectName: encodeName({ organization: o.organization, commonName }),
    issuerName: root.subjectName,
    subjectKey: key,
    signer: root.key,
    signerSki: root.ski,
    pathLen: 0,
    notBefore: wholeSeconds(new Date(o.now.getTime() - 300_000)),
    notAfter,
  });
  return { key, certPem: toPem('CERTIFICATE', der), subject: `O=${o.organization}, CN=${commonName}`, notAfter };
}

/**
 * A new issuing CA under the local root, where none of that name is in the
 * directory (after one was revoked): key, chain, then certificate. Its CN
 * carries a generation number (`… Issuing CA EC 2`) when revoked ones came
 * before, so validators never mix up its CRLs with theirs.
 */
export function addIssuingCa(o: {
  dir: string;
  root: RootCa;
  name: IssuerName;
  keyType: CaKeyType;
  passphrase: string | undefined;
  organization: string;
  gatewayId: string;
  issuingValidityDays: number;
  now?: Date;
}): { subject: string; notAfter: Date } {
  if (existsSync(join(o.dir, caFiles.cert(o.name))))
    throw new CertError('CA_ALREADY_INITIALISED', `the ${o.name.toUpperCase()} issuing CA already exists in ${o.dir}; it is never overwritten`);
  const parts = parseCertificate(o.root.certPem);
  const root = { subjectName: Buffer.from(parts.subjectName), ski: ski(spkiOf(o.root.key)), key: o.root.key, notAfter: parts.notAfter };
  const generation = 1 + revokedCas(o.dir).filter((r) => r.issuer === o.name).length;
  const made = issuingCaUnder(root, { ...o, now: o.now ?? new Date(), generation });
  writeKeyFile(join(o.dir, caFiles.key(o.name)), made.key.exportable(), o.passphrase);
  writeFileAtomic(join(o.dir, caFiles.chain(o.name)), o.root.certPem, 0o644);
  writeFileAtomic(join(o.dir, caFiles.cert(o.name)), made.certPem, 0o644);
  return { subject: made.subject, notAfter: made.notAfter };
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
  const csrPem = buildCsr(key, encodeName({ organization: o.organization, commonName: `${o.gatewayId} Issuing CA ${o.name.toUpperCase()}`.slice(0, 64) }), [
    basicConstraints(true, 0),
    keyUsage(['keyCertSign', 'cRLSign']),
  ]);
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
export function importIntermediate(o: { dir: string; name: IssuerName; certPem: string; chainPem?: string; passphrase: string | undefined; now?: Date }): {
  subject: string;
  notAfter: Date;
} {
  const pendingPath = join(o.dir, caFiles.pendingKey(o.name));
  const keyPath = existsSync(pendingPath) ? pendingPath : join(o.dir, caFiles.key(o.name));
  if (!existsSync(keyPath))
    throw new CertError('INTERMEDIATE_INVALID', `no key waits for this certificate; run edge-agent ca request-intermediate --issuer ${o.name} first`);
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
  const rest = [...certBlocks.slice(1), ...(o.chainPem ? pemBlocks(o.chainPem).filter((b) => b.label === 'CERTIFICATE') : [])].map((b) =>
    toPem('CERTIFICATE', b.der),
  );
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
