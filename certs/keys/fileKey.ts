import { closeSync, fchmodSync, fsyncSync, openSync, readdirSync, renameSync, statSync, writeSync, readFileSync, rmSync } from 'node:fs';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { dirname, join } from 'node:path';
import { CertError } from '../errors.js';
import { pemBlocks, toPem } from '../x509/pem.js';
import { decryptPkcs8, EncryptedKeyDamaged, encryptPkcs8, keyEncryption, MIN_KEY_ENCRYPTION_ITERATIONS, type KeyEncryption } from './pbes2.js';

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

/**
 * Writes a private key as PKCS#8 PEM, mode 0600; with a passphrase as an
 * EncryptedPrivateKeyInfo (PBES2: PBKDF2-HMAC-SHA256 at
 * KEY_ENCRYPTION_ITERATIONS, AES-256-CBC), which `openssl pkey` and
 * `createPrivateKey` read.
 */
export function writeKeyFile(path: string, key: KeyObject, passphrase: string | undefined): void {
  const pem = passphrase
    ? toPem('ENCRYPTED PRIVATE KEY', encryptPkcs8(key.export({ format: 'der', type: 'pkcs8' }), passphrase))
    : (key.export({ format: 'pem', type: 'pkcs8' }) as string);
  writeFileAtomic(path, pem, 0o600);
}

/** How a key file is stored: unencrypted, or encrypted and how (and whether that is below today's work factor). */
export type KeyFileProtection = { encrypted: false } | ({ encrypted: true; weak: boolean } & KeyEncryption);

function damaged(path: string, why: string, cause?: unknown): CertError {
  return new CertError('CA_KEY_DAMAGED', `CA key ${path} is damaged or truncated (${why}); restore it from a backup`, {
    ...(cause === undefined ? {} : { cause }),
    details: { path },
  });
}

/** The one PEM block of a key file, or CA_KEY_DAMAGED when there is none (a file cut short loses its END line). */
function keyBlock(path: string, pem: string): { label: string; der: Buffer } {
  let blocks: { label: string; der: Buffer }[];
  try {
    blocks = pemBlocks(pem).filter((b) => b.label.endsWith('PRIVATE KEY'));
  } catch (err) {
    throw damaged(path, 'its PEM is not valid base64', err);
  }
  if (blocks.length !== 1) throw damaged(path, blocks.length === 0 ? 'no complete PEM private key block' : 'more than one key in the file');
  return blocks[0]!;
}

/** Whether and how a key file is encrypted; CA_KEY_DAMAGED when its structure cannot be read. */
export function keyFileProtection(path: string): KeyFileProtection {
  const block = keyBlock(path, readFileSync(path, 'utf8'));
  if (block.label !== 'ENCRYPTED PRIVATE KEY') return { encrypted: false };
  let encryption: KeyEncryption;
  try {
    encryption = keyEncryption(block.der);
  } catch (err) {
    if (err instanceof EncryptedKeyDamaged) throw damaged(path, err.message, err);
    throw err;
  }
  const weak = encryption.scheme !== 'PBES2/PBKDF2' || (encryption.iterations ?? 0) < MIN_KEY_ENCRYPTION_ITERATIONS || encryption.prf === 'hmacWithSHA1';
  return { encrypted: true, weak, ...encryption };
}

/**
 * Reads a CA private key. Refuses a file that group or others can read or
 * write (the key would already be exposed), names a missing or wrong
 * passphrase as such, tells a damaged or truncated file (CA_KEY_DAMAGED)
 * from a wrong passphrase, and never puts the passphrase in an error.
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
  const block = keyBlock(path, readFileSync(path, 'utf8'));
  if (block.label !== 'ENCRYPTED PRIVATE KEY') {
    try {
      return createPrivateKey({ key: toPem(block.label, block.der), format: 'pem' });
    } catch (err) {
      throw damaged(path, 'not a readable private key', err);
    }
  }
  if (!passphrase) {
    throw new CertError(
      'CA_PASSPHRASE_MISSING',
      `CA key ${path} is encrypted and no passphrase is configured (ca.passphraseFile, EDGE_AGENT_CA_PASSPHRASE or $CREDENTIALS_DIRECTORY/ca-passphrase)`,
    );
  }
  const wrong = () => new CertError('CA_PASSPHRASE_WRONG', `CA key ${path} could not be decrypted: the passphrase is wrong`, { details: { path } });
  const outcome = decryptPkcs8(block.der, passphrase);
  if (outcome.ok) {
    try {
      return createPrivateKey({ key: Buffer.from(outcome.privateKeyInfo), format: 'der', type: 'pkcs8' });
    } catch (err) {
      throw damaged(path, 'it decrypts, but not to a readable private key', err);
    }
  }
  if (outcome.reason === 'wrong-passphrase') throw wrong();
  if (outcome.reason === 'damaged')
    throw damaged(
      path,
      outcome.encryption.scheme === 'unreadable'
        ? 'its encrypted structure cannot be read'
        : 'the passphrase is right, but what it decrypts is not a whole key',
    );
  // A scheme this module does not read itself (scrypt, PBES1): OpenSSL may.
  try {
    return createPrivateKey({ key: toPem(block.label, block.der), format: 'pem', passphrase });
  } catch {
    throw wrong();
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
