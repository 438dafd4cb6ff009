import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../../certs/keys/fileKey.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import type { ApiToken, UserRepository } from '../store/userRepository.js';
import { ADMIN_TOKEN_FILE, FIRST_ADMIN_TOKEN_HOURS, FIRST_ADMIN_TOKEN_LABEL, hashSecret, newTokenSecret } from './auth.js';

/** The first-start tokens not yet revoked (one, unless an older version left more). */
function liveFirstTokens(users: UserRepository): ApiToken[] {
  return users.tokens().filter((t) => t.label === FIRST_ADMIN_TOKEN_LABEL && !t.revokedAt);
}

/**
 * Ends the first administrator's token once an administrator's own token
 * that outlives it exists: called in the transaction that makes a token
 * for an `admin` user (through the API or with --local), with that token's
 * expiry (undefined: until revoked). A token that ends first (one made
 * already expired to check that clients refuse it, a one-hour token) is no
 * replacement and ends nothing. Answers the ids revoked; the caller removes
 * admin.token after the commit (removeAdminTokenFile).
 */
export function supersedeFirstAdminToken(users: UserRepository, expiresAt: Date | undefined): number[] {
  const outlives = (t: ApiToken) => expiresAt === undefined || (t.expiresAt !== undefined && t.expiresAt < expiresAt);
  const ids = liveFirstTokens(users)
    .filter(outlives)
    .map((t) => t.id);
  for (const id of ids) users.revokeToken(id);
  return ids;
}

/** Removes <dataDir>/admin.token; a file already gone is fine. */
export function removeAdminTokenFile(dataDir: string): void {
  rmSync(join(dataDir, ADMIN_TOKEN_FILE), { force: true });
}

/**
 * The token the agent makes at its first start, for the first administrator
 * in <dataDir>/admin.token. It is a way in, not an account to keep: it
 * expires FIRST_ADMIN_TOKEN_HOURS after it was made, it is revoked as soon
 * as admin.token no longer holds it (deleting the file, as the docs advise,
 * ends it), and as soon as a token is made for an administrator
 * (supersedeFirstAdminToken). A copy of the data directory thus holds no
 * lasting credential.
 */
export class FirstAdminToken {
  constructor(private readonly deps: { log: Logger; dataDir: () => string; store: Store; users: UserRepository }) {}

  private get file(): string {
    return join(this.deps.dataDir(), ADMIN_TOKEN_FILE);
  }

  /**
   * The SHA-256 of the secret admin.token holds; `absent` when the file is
   * gone (deleted: the token ends); `unreadable` for any other failure
   * (permissions after a restore, EMFILE under load, EIO), which proves
   * nothing about the token and ends nothing.
   */
  private heldHash(): string | 'absent' | 'unreadable' {
    try {
      return hashSecret(readFileSync(this.file, 'utf8').trim());
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
      this.deps.log.warn(
        { file: this.file, err: { code: (err as NodeJS.ErrnoException).code, message: (err as Error).message } },
        'admin.token cannot be read: the first-start token is refused until it can, not revoked',
      );
      return 'unreadable';
    }
  }

  /**
   * At the first start (no user yet): the `admin` user and its token in
   * admin.token (0600); the log says where, never what. At a later start: a
   * first-start token whose file is gone is revoked, one without an expiry
   * (made by an older version) gets one, and the file of a token that has
   * ended is removed.
   */
  atStart(): void {
    const { store, users } = this.deps;
    if (users.count() === 0) {
      const secret = newTokenSecret();
      const expiresAt = new Date(Date.now() + FIRST_ADMIN_TOKEN_HOURS * 3_600_000);
      // The file first (replacing one left from an earlier database): a token that cannot be handed over is not made, and the next start tries again.
      writeFileAtomic(this.file, `${secret}\n`, 0o600);
      store.durable(() => {
        const admin = users.add('admin', 'admin', 'agent');
        users.addToken(admin.id, hashSecret(secret), FIRST_ADMIN_TOKEN_LABEL, expiresAt);
      });
      this.deps.log.warn(
        { file: this.file, expiresAt: expiresAt.toISOString() },
        'first start: an admin token for the local API is in this file (readable by the agent user only); ' +
          'it expires in 24 hours or when an administrator token of your own is made: make your own users and tokens',
      );
      return;
    }
    const held = this.heldHash();
    if (held === 'unreadable') return;
    const holder = held === 'absent' ? undefined : users.tokenByHash(held)?.token;
    for (const token of liveFirstTokens(users)) {
      if (token.id !== holder?.id) this.revoke(users, token, 'admin.token no longer holds it');
      else if (!token.expiresAt) {
        const expiresAt = new Date(Date.now() + FIRST_ADMIN_TOKEN_HOURS * 3_600_000);
        store.durable(() => users.setTokenExpiry(token.id, expiresAt));
        this.deps.log.warn(
          { tokenId: token.id, expiresAt: expiresAt.toISOString() },
          'the first-start admin token had no expiry: it expires in 24 hours; make your own users and tokens',
        );
      }
    }
    // A file whose token has ended is only a trap for the commands, which would present it.
    if (holder?.label === FIRST_ADMIN_TOKEN_LABEL && (holder.revokedAt || (holder.expiresAt && holder.expiresAt <= new Date()))) {
      removeAdminTokenFile(this.deps.dataDir());
      this.deps.log.info({ file: this.file, tokenId: holder.id }, 'admin.token removed: the first-start token it held has ended');
    }
  }

  /**
   * Whether a token that authenticated (its secret hashing to
   * `secretSha256`) may be used. Any token but the first-start one may;
   * that one only while admin.token still holds it: a file gone or holding
   * another secret revokes it here, for good; a file that cannot be read
   * refuses this request only.
   */
  stillHeld(token: ApiToken, secretSha256: string): 'held' | 'revoked' | 'unconfirmed' {
    if (token.label !== FIRST_ADMIN_TOKEN_LABEL) return 'held';
    const held = this.heldHash();
    if (secretSha256 === held) return 'held';
    if (held === 'unreadable') return 'unconfirmed';
    this.revoke(this.deps.users, token, 'admin.token no longer holds it');
    return 'revoked';
  }

  private revoke(users: UserRepository, token: ApiToken, why: string): void {
    this.deps.store.durable(() => users.revokeToken(token.id));
    this.deps.log.warn({ tokenId: token.id, file: this.file, why }, 'first-start admin token revoked');
  }
}
