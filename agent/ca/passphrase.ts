import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { AgentError } from '../errors.js';

/** The configured passphrase file or credential cannot be read, or is empty. */
export class PassphraseError extends AgentError {
  readonly code = 'CA_PASSPHRASE_UNREADABLE' as const;
}

/**
 * The CA key passphrase, from the first source that has one: `ca.passphrase`
 * (or EDGE_AGENT_CA_PASSPHRASE), the file `ca.passphraseFile`, or the
 * systemd credential `ca-passphrase` ($CREDENTIALS_DIRECTORY, LoadCredential=).
 * Undefined when none is configured: keys are then stored unencrypted.
 */
export function resolvePassphrase(ca: Config['ca'], env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (ca.passphrase !== '') return ca.passphrase;
  const fromFile = (path: string, what: string) => {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new PassphraseError(`cannot read the CA passphrase from ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    const first = text.split(/\r?\n/)[0] ?? '';
    if (first === '') throw new PassphraseError(`${what} ${path} is empty`);
    return first;
  };
  if (ca.passphraseFile !== '') return fromFile(ca.passphraseFile, 'ca.passphraseFile');
  const credentials = env.CREDENTIALS_DIRECTORY;
  if (credentials && existsSync(join(credentials, 'ca-passphrase'))) return fromFile(join(credentials, 'ca-passphrase'), 'systemd credential');
  return undefined;
}
