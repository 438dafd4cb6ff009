import { closeSync, fchmodSync, fsyncSync, openSync, readdirSync, renameSync, statSync, writeSync, readFileSync, rmSync } from 'node:fs';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { dirname, join } from 'node:path';
import { CertError } from '../errors.js';

/** Writes `data` so that a crash leaves either the old file or the new one: temporary file, fsync, rename, fsync of the directory. */
export function writeFileAtomic(path: string, data: string | Buffer, mode = 0o600): void {
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  const fd = openSync(tmp, 'wx', mode);
  try {
    fchmodSync(fd, mode); // the process umask must not narrow or widen what the caller asked for
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/** Writes a private key as PKCS#8 PEM, encrypted (AES-256-CBC, PBKDF2) when a passphrase is given, mode 0600. */
export function writeKeyFile(path: string, key: KeyObject, passphrase: string | undefined): void {
  const pem = passphrase
    ? key.export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase })
    : key.export({ format: 'pem', type: 'pkcs8' });
  writeFileAtomic(path, pem, 0o600);
}

/**
 * Reads a CA private key. Refuses a file that group or others can read or
 * write (the key would already be exposed), names a missing or wrong
 * passphrase as such, and never puts the passphrase in an error.
 */
export function readKeyFile(path: string, passphrase: string | undefined): KeyObject {
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new CertError(
      'CA_KEY_PERMISSIONS',
      `CA key ${path} has mode ${mode.toString(8).padStart(4, '0')}: group or others can access it; run chmod 600 on it (and consider the key exposed)`,
      { details: { path, mode: mode.toString(8) } },
    );
  }
  const pem = readFileSync(path, 'utf8');
  const encrypted = pem.includes('BEGIN ENCRYPTED PRIVATE KEY');
  if (encrypted && !passphrase) {
    throw new CertError('CA_PASSPHRASE_MISSING', `CA key ${path} is encrypted and no passphrase is configured (ca.passphraseFile, EDGE_AGENT_CA_PASSPHRASE or $CREDENTIALS_DIRECTORY/ca-passphrase)`);
  }
  try {
    return createPrivateKey(encrypted ? { key: pem, format: 'pem', passphrase } : { key: pem, format: 'pem' });
  } catch (err) {
    if (encrypted) throw new CertError('CA_PASSPHRASE_WRONG', `CA key ${path} could not be decrypted: the passphrase is wrong`, { details: { path } });
    throw new CertError('CA_KEY_MISMATCH', `CA key ${path} is not a readable PKCS#8 private key`, { cause: err, details: { path } });
  }
}

/**
 * Re-encrypts every key file in `dir` (`*.key`) from the current passphrase
 * (none for unencrypted keys) to `next` (none to store them unencrypted).
 * Every key is read and checked first; only then is each rewritten
 * atomically, so a wrong current passphrase changes nothing.
 */
export function reencryptKeyFiles(dir: string, current: string | undefined, next: string | undefined): string[] {
  const paths = readdirSync(dir)
    .filter((f) => f.endsWith('.key'))
    .map((f) => join(dir, f));
  const keys = paths.map((path) => ({ path, key: readKeyFile(path, current) }));
  for (const { path, key } of keys) writeKeyFile(path, key, next);
  return paths;
}
