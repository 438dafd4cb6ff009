import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CertError } from './errors.js';
import { addIssuingCa } from './hierarchy.js';
import { caFiles, type IssuerName } from './issuer.js';
import type { CaKeyType } from './keys/backend.js';
import { writeFileAtomic } from './keys/fileKey.js';
import { REVOKED_DIR, revokedCas, revokedRecordFile, type CaRevocationReason, type RevokedCa } from './revokedCas.js';
import { loadRoot, writeRootCrl } from './root.js';
import { parseCertificate } from './x509/certificate.js';

export interface RevokeIssuingOptions {
  dir: string;
  name: IssuerName;
  reason: CaRevocationReason;
  passphrase: string | undefined;
  rootCrlValidityDays: number;
  /** The issuing CA made in its place. */
  successor: { keyType: CaKeyType; organization: string; gatewayId: string; issuingValidityDays: number };
  now?: Date;
}

export interface IssuingRevocation {
  revoked: RevokedCa;
  successor: { subject: string; notAfter: Date };
  rootCrl: { nextUpdate: Date; crlNumber: number };
}

/**
 * `edge-agent ca revoke-issuing`: revokes a local issuing CA with the root
 * key and puts a new one in its place. In this order, each step durable
 * before the next, so that a run cut short is finished by running it again:
 * the record of the revocation (`revoked/…json`, from then on the daemon
 * refuses to load that CA), the certificate and chain moved to `revoked/`
 * and the key deleted (nothing may sign with it again), the root CRL signed
 * again with the new entry, and the successor written (key, chain, then
 * certificate). An issuing CA signed by an enterprise PKI is revoked there.
 */
export function revokeIssuingCa(o: RevokeIssuingOptions): IssuingRevocation {
  const now = o.now ?? new Date();
  const root = loadRoot(o.dir, o.passphrase);
  if (!root) {
    if (existsSync(join(o.dir, caFiles.rootCert))) {
      throw new CertError(
        'CA_ROOT_KEY_OFFLINE',
        `the root key is not in ${o.dir}: bring ${caFiles.rootKey} back (it signs the root CRL and the new issuing CA), then run this again`,
      );
    }
    throw new CertError('CA_NOT_LOCAL', `there is no local root in ${o.dir}: an issuing CA signed by an enterprise PKI is revoked by that PKI`);
  }
  const certPath = join(o.dir, caFiles.cert(o.name));
  let record: RevokedCa | undefined;
  if (existsSync(certPath)) {
    const certPem = readFileSync(certPath, 'utf8');
    const cert = new X509Certificate(certPem);
    const rootCert = new X509Certificate(root.certPem);
    if (!cert.checkIssued(rootCert) || !cert.verify(rootCert.publicKey)) {
      throw new CertError('CA_NOT_LOCAL', `${certPath} is not signed by the local root: an issuing CA signed by an enterprise PKI is revoked by that PKI`);
    }
    const serial = parseCertificate(certPem).serial.toString('hex');
    const archive = join(o.dir, REVOKED_DIR);
    mkdirSync(archive, { recursive: true, mode: 0o700 });
    const recordPath = join(archive, revokedRecordFile(o.name, serial));
    record = existsSync(recordPath)
      ? (JSON.parse(readFileSync(recordPath, 'utf8')) as RevokedCa)
      : {
          issuer: o.name,
          serial,
          subject: cert.subject.replace(/\n/g, ', '),
          revokedAt: new Date(Math.floor(now.getTime() / 1000) * 1000).toISOString(),
          reason: o.reason,
        };
    writeFileAtomic(recordPath, `${JSON.stringify(record, null, 2)}\n`, 0o644);
    const chainPath = join(o.dir, caFiles.chain(o.name));
    writeFileAtomic(join(archive, `issuing-${o.name}-${serial}.crt`), certPem, 0o644);
    if (existsSync(chainPath)) writeFileAtomic(join(archive, `issuing-${o.name}-${serial}.chain.pem`), readFileSync(chainPath), 0o644);
    // The certificate first: from then on the CA is gone; its key goes last, for good.
    rmSync(certPath);
    rmSync(chainPath, { force: true });
    rmSync(join(o.dir, caFiles.key(o.name)), { force: true });
  } else {
    // A run cut short after the certificate was moved away: finish it.
    record = revokedCas(o.dir)
      .filter((r) => r.issuer === o.name)
      .at(-1);
    if (!record) throw new CertError('CERT_NOT_FOUND', `there is no ${o.name.toUpperCase()} issuing CA in ${o.dir}`);
  }
  const rootCrl = writeRootCrl(o.dir, root, o.rootCrlValidityDays, now);
  const successor = addIssuingCa({ dir: o.dir, root, name: o.name, passphrase: o.passphrase, ...o.successor, now });
  return { revoked: record, successor, rootCrl };
}
