import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildCrl, crlInfo, type CrlEntry } from './crl.js';
import { CertError } from './errors.js';
import { caFiles } from './issuer.js';
import { SoftwareKey } from './keys/backend.js';
import { readKeyFile, writeFileAtomic } from './keys/fileKey.js';
import { revokedCas } from './revokedCas.js';
import { parseCertificate, signatureAlgorithm } from './x509/certificate.js';
import { authorityKeyIdentifier, keyIdentifier } from './x509/extensions.js';
import { pemBlocks } from './x509/pem.js';
import { analyseSpki } from './x509/publicKey.js';

const DAY = 86_400_000;

/** nextUpdate of the root CRL, in days, unless configured otherwise (ca.rootCrlValidityDays). */
export const DEFAULT_ROOT_CRL_VALIDITY_DAYS = 90;

/** The local root with its key, for signing issuing CAs and the root CRL. */
export interface RootCa {
  certPem: string;
  key: SoftwareKey;
}

/**
 * The local root and its key, checked to belong together (CA_KEY_MISMATCH
 * otherwise). Undefined when there is no local root (chained to an
 * enterprise PKI) or its key is not on the gateway (moved offline).
 */
export function loadRoot(dir: string, passphrase: string | undefined): RootCa | undefined {
  const certPath = join(dir, caFiles.rootCert);
  const keyPath = join(dir, caFiles.rootKey);
  if (!existsSync(certPath) || !existsSync(keyPath)) return undefined;
  const privateKey = readKeyFile(keyPath, passphrase);
  const certPem = readFileSync(certPath, 'utf8');
  let matches: boolean;
  try {
    matches = new X509Certificate(certPem).checkPrivateKey(privateKey);
  } catch (err) {
    throw new CertError('CA_KEY_MISMATCH', `the root certificate ${certPath} cannot be read: restore it from a backup`, {
      cause: err,
      details: { path: certPath },
    });
  }
  if (!matches) {
    throw new CertError('CA_KEY_MISMATCH', `the root key ${keyPath} does not belong to the root certificate ${certPath}: restore the pair from a backup`, {
      details: { key: keyPath, certificate: certPath },
    });
  }
  return { certPem, key: new SoftwareKey(privateKey, analyseSpki(parseCertificate(certPem).spki).type) };
}

const wholeSeconds = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);

/** The root CRL now in the CA directory, if it can be read. */
export function currentRootCrl(dir: string): ReturnType<typeof crlInfo> | undefined {
  const path = join(dir, caFiles.rootCrl);
  if (!existsSync(path)) return undefined;
  try {
    const block = pemBlocks(readFileSync(path, 'utf8')).find((b) => b.label === 'X509 CRL');
    return block ? crlInfo(block.der) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Signs root.crl from the records of revoked issuing CAs (none: an empty
 * list, which validators that want a CRL for every CA of a chain need),
 * valid for `validityDays` and never past the root. Its CRL number is the
 * Unix time, or one more than the last, so it grows without other state.
 */
export function writeRootCrl(dir: string, root: RootCa, validityDays: number, now: Date = new Date()): { nextUpdate: Date; crlNumber: number } {
  const parts = parseCertificate(root.certPem);
  const signer = {
    subjectName: Buffer.from(parts.subjectName),
    aki: authorityKeyIdentifier(parts.extensions.subjectKeyId ?? keyIdentifier(analyseSpki(parts.spki).keyBits)),
    signatureAlgorithm: signatureAlgorithm(root.key.family, root.key.hash),
    key: root.key,
  };
  const thisUpdate = wholeSeconds(now);
  const nextUpdate = new Date(Math.min(thisUpdate.getTime() + validityDays * DAY, parts.notAfter.getTime()));
  const crlNumber = Math.max(Math.floor(thisUpdate.getTime() / 1000), (currentRootCrl(dir)?.crlNumber ?? 0) + 1);
  const entries: CrlEntry[] = revokedCas(dir).map((r) => ({ serial: r.serial, revokedAt: new Date(r.revokedAt), reason: r.reason }));
  writeFileAtomic(join(dir, caFiles.rootCrl), buildCrl(signer, entries, crlNumber, thisUpdate, nextUpdate).pem, 0o644);
  return { nextUpdate, crlNumber };
}

/**
 * Why the root CRL must be signed again, if it must: it is missing or
 * unreadable, past half of its validity, valid longer than configured
 * (written before the setting: such CRLs ran to the root's end), or older
 * than a revocation it does not list yet.
 */
export function rootCrlDue(dir: string, validityDays: number, now: Date = new Date()): string | undefined {
  const crl = currentRootCrl(dir);
  if (!crl) return 'missing or unreadable';
  const validity = validityDays * DAY;
  if (crl.nextUpdate.getTime() - now.getTime() < validity / 2) return 'past half of its validity';
  if (crl.nextUpdate.getTime() - crl.thisUpdate.getTime() > validity + DAY) return 'valid longer than ca.rootCrlValidityDays';
  if (revokedCas(dir).some((r) => new Date(r.revokedAt) >= crl.thisUpdate)) return 'a revocation is not listed yet';
  return undefined;
}

export type RootCrlRefresh =
  | { status: 'none' }
  | { status: 'fresh' | 'written'; nextUpdate: Date; reason?: string }
  | { status: 'offline'; nextUpdate?: Date; reason: string };

/**
 * Signs the root CRL again when it is due (or `force`), with the root key
 * `loadKey` gives; `offline` when that key is not on the gateway, with the
 * nextUpdate of the CRL that stays. `none` without a local root.
 */
export function refreshRootCrl(
  dir: string,
  validityDays: number,
  loadKey: () => RootCa | undefined,
  options: { now?: Date; force?: boolean } = {},
): RootCrlRefresh {
  if (!existsSync(join(dir, caFiles.rootCert))) return { status: 'none' };
  const now = options.now ?? new Date();
  const reason = options.force ? 'asked for' : rootCrlDue(dir, validityDays, now);
  const current = currentRootCrl(dir);
  if (!reason) return { status: 'fresh', nextUpdate: current!.nextUpdate };
  const root = loadKey();
  if (!root) return { status: 'offline', reason, ...(current ? { nextUpdate: current.nextUpdate } : {}) };
  return { status: 'written', reason, nextUpdate: writeRootCrl(dir, root, validityDays, now).nextUpdate };
}
