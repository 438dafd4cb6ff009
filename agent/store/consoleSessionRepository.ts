import type { Store } from './database.js';

/** A sign-in to the web console: what the cookie's secret stands for. */
export interface ConsoleSession {
  id: number;
  /** SHA-256 (hex) of the API token or directory session secret it was signed in with. */
  credentialSha256: string;
  credentialKind: 'token' | 'session';
  createdAt: Date;
  expiresAt?: Date;
  endedAt?: Date;
}

interface Row {
  id: number;
  secret_sha256: string;
  credential_sha256: string;
  credential_kind: 'token' | 'session';
  created_at: string;
  expires_at: string | null;
  ended_at: string | null;
}

/** Rows of ended or expired console sessions are kept this long (for nothing but a late request's 401 reason), then deleted. */
const KEEP_MS = 24 * 3_600_000;

/** The console's sessions (migration 0012): looked up by the SHA-256 of the cookie's secret. */
export class ConsoleSessionRepository {
  constructor(private readonly store: Store) {}

  /** Records a sign-in; rows ended or expired more than a day ago go at the same time. */
  create(secretSha256: string, credentialSha256: string, credentialKind: 'token' | 'session', expiresAt: Date | undefined, now = new Date()): number {
    const cutoff = new Date(now.getTime() - KEEP_MS).toISOString();
    this.store.statement('DELETE FROM console_sessions WHERE ended_at < @cutoff OR expires_at < @cutoff').run({ cutoff });
    return Number(
      this.store
        .statement('INSERT INTO console_sessions (secret_sha256, credential_sha256, credential_kind, created_at, expires_at) VALUES (?, ?, ?, ?, ?)')
        .run(secretSha256, credentialSha256, credentialKind, now.toISOString(), expiresAt?.toISOString() ?? null).lastInsertRowid,
    );
  }

  /** The session whose secret has this SHA-256, with the stored hash (compared in constant time by the caller). */
  byHash(secretSha256: string): { session: ConsoleSession; storedSha256: string } | undefined {
    const r = this.store.statement('SELECT * FROM console_sessions WHERE secret_sha256 = ?').get(secretSha256) as Row | undefined;
    if (!r) return undefined;
    return {
      storedSha256: r.secret_sha256,
      session: {
        id: r.id,
        credentialSha256: r.credential_sha256,
        credentialKind: r.credential_kind,
        createdAt: new Date(r.created_at),
        ...(r.expires_at ? { expiresAt: new Date(r.expires_at) } : {}),
        ...(r.ended_at ? { endedAt: new Date(r.ended_at) } : {}),
      },
    };
  }

  /** Ends the session of this secret (a sign-out); false when there is none or it had ended. */
  end(secretSha256: string, now = new Date()): boolean {
    return (
      this.store.statement('UPDATE console_sessions SET ended_at = ? WHERE secret_sha256 = ? AND ended_at IS NULL').run(now.toISOString(), secretSha256)
        .changes > 0
    );
  }
}
