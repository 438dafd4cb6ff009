import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CertificateAuthority } from '../../certs/authority.js';
import { CertError } from '../../certs/errors.js';
import { initCa } from '../../certs/hierarchy.js';
import { currentRootCrl } from '../../certs/root.js';
import { caFiles, IssuingCa } from '../../certs/issuer.js';
import { keyFileProtection, writeFileAtomic } from '../../certs/keys/fileKey.js';
import type { KeyEncryption } from '../../certs/keys/pbes2.js';
import type { Config } from '../config/schema.js';
import type { CertificateRepository } from '../store/certificateRepository.js';

/** True when the CA directory holds at least one issuing CA certificate. */
export function caExists(dir: string): boolean {
  return existsSync(join(dir, caFiles.cert('ec'))) || existsSync(join(dir, caFiles.cert('rsa')));
}

/**
 * Refuses any key file in the CA directory (root, issuing, pending) that
 * group or others can access: one exposed key is enough to stop.
 */
export function checkKeyFilePermissions(dir: string): void {
  if (!existsSync(dir)) return;
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.key'))) {
    const mode = statSync(join(dir, file)).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new CertError(
        'CA_KEY_PERMISSIONS',
        `CA key ${join(dir, file)} has mode ${mode.toString(8).padStart(4, '0')}: group or others can access it; ` +
          'run chmod 600 on it (and consider the key exposed)',
      );
    }
  }
}

/** Key files in the CA directory that are not encrypted. */
export function unencryptedKeyFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.key'))
    .map((f) => join(dir, f))
    .filter((path) => !readFileSync(path, 'utf8').includes('BEGIN ENCRYPTED PRIVATE KEY'));
}

/**
 * Encrypted key files in the CA directory whose encryption is weaker than
 * what is written today (keys written before it: PBKDF2 at 2,048
 * iterations). A file that cannot be read is left to the load to report.
 */
export function weaklyEncryptedKeyFiles(dir: string): ({ file: string } & KeyEncryption)[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.key'))
    .flatMap((f) => {
      try {
        const protection = keyFileProtection(join(dir, f));
        return protection.encrypted && protection.weak
          ? [{ file: join(dir, f), scheme: protection.scheme, iterations: protection.iterations, prf: protection.prf, cipher: protection.cipher }]
          : [];
      } catch {
        return [];
      }
    });
}

export function initFromConfig(ca: Config['ca'], gatewayId: string, passphrase: string | undefined): void {
  initCa({
    dir: ca.dir,
    passphrase,
    organization: ca.organization,
    gatewayId,
    rootKeyType: ca.rootKeyType,
    issuers: { ec: ca.issuingKeyType, rsa: ca.rsaIssuingKeyType },
    rootValidityDays: ca.rootValidityDays,
    issuingValidityDays: ca.issuingValidityDays,
    rootCrlValidityDays: ca.rootCrlValidityDays,
  });
}

/** The authority over the CA directory and the certificate store, every key checked (permissions, passphrase, match). */
export function loadAuthority(ca: Config['ca'], store: CertificateRepository, passphrase: string | undefined): CertificateAuthority {
  checkKeyFilePermissions(ca.dir);
  const ec = IssuingCa.load(ca.dir, 'ec', passphrase);
  const rsa = IssuingCa.load(ca.dir, 'rsa', passphrase);
  if (!ec && !rsa) {
    // With ca.autoInit on (the default) only the daemon's first start would create it: a command run before that needs `ca init`.
    const or = ca.autoInit ? ' (or start the agent once: ca.autoInit is on)' : ' (ca.autoInit is off)';
    throw new CertError('CA_NOT_INITIALISED', `no CA in ${ca.dir}; run edge-agent ca init${or}`);
  }
  return new CertificateAuthority({
    issuers: { ...(ec ? { ec } : {}), ...(rsa ? { rsa } : {}) },
    store,
    organization: ca.organization,
    validityDays: {
      'mqtt-device': ca.validityDays.mqttDevice,
      'opcua-application': ca.validityDays.opcuaApplication,
      'broker-server': ca.validityDays.brokerServer,
      'agent-client': ca.validityDays.agentClient,
    },
    allowKeyReuse: ca.allowKeyReuse,
  });
}

/**
 * Writes a fresh CRL per issuing CA (PEM, concatenated) to ca.crlFile,
 * followed by the root's CRL where the CA directory has one; returns the
 * earliest nextUpdate of them all.
 */
export function publishCrlFile(authority: CertificateAuthority, ca: Config['ca']): { nextUpdate: Date; crlNumbers: string[] } {
  const crls = authority.crls(ca.crlValidityHours);
  const root = join(ca.dir, caFiles.rootCrl);
  mkdirSync(dirname(ca.crlFile), { recursive: true, mode: 0o755 });
  writeFileAtomic(ca.crlFile, crls.map((c) => c.pem).join('') + (existsSync(root) ? readFileSync(root, 'utf8') : ''), 0o644);
  const rootNextUpdate = currentRootCrl(ca.dir)?.nextUpdate;
  return {
    nextUpdate: new Date(Math.min(...crls.map((c) => c.nextUpdate.getTime()), ...(rootNextUpdate ? [rootNextUpdate.getTime()] : []))),
    crlNumbers: crls.map((c) => `${c.issuer}:${c.crlNumber}`),
  };
}
