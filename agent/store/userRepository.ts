import type { Store } from './database.js';

export type Role = 'admin' | 'technician' | 'viewer';
export const ROLES: readonly Role[] = ['admin', 'technician', 'viewer'];

export interface User {
  id: number;
  name: string;
  role: Role;
  disabledAt?: Date;
  createdAt: Date;
  createdBy: string;
}

export interface ApiToken {
  id: number;
  userId: number;
  label: string;
  createdAt: Date;
  expiresAt?: Date;
  revokedAt?: Date;
  lastUsedAt?: Date;
}

interface UserRow {
  id: number;
  name: string;
  role: Role;
  disabled_at: string | null;
  created_at: string;
  created_by: string;
}

interface TokenRow {
  id: number;
  user_id: number;
  label: string;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
}

const toUser = (r: UserRow): User => ({
  id: r.id,
  name: r.name,
  role: r.role,
  ...(r.disabled_at ? { disabledAt: new Date(r.disabled_at) } : {}),
  createdAt: new Date(r.created_at),
  createdBy: r.created_by,
});

const toToken = (r: TokenRow): ApiToken => ({
  id: r.id,
  userId: r.user_id,
  label: r.label,
  createdAt: new Date(r.created_at),
  ...(r.expires_at ? { expiresAt: new Date(r.expires_at) } : {}),
  ...(r.revoked_at ? { revokedAt: new Date(r.revoked_at) } : {}),
  ...(r.last_used_at ? { lastUsedAt: new Date(r.last_used_at) } : {}),
});

/** Users and their API tokens (migration 0007); tokens by the SHA-256 of their secret only. */
export class UserRepository {
  constructor(private readonly store: Store) {}

  add(name: string, role: Role, createdBy: string): User {
    const info = this.store
      .statement('INSERT INTO users (name, role, created_at, created_by) VALUES (?, ?, ?, ?)')
      .run(name, role, new Date().toISOString(), createdBy);
    return this.get(Number(info.lastInsertRowid))!;
  }

  get(id: number): User | undefined {
    const row = this.store.statement('SELECT * FROM users WHERE id = ?').get(id) as UserRow | undefined;
    return row ? toUser(row) : undefined;
  }

  byName(name: string): User | undefined {
    const row = this.store.statement('SELECT * FROM users WHERE name = ?').get(name) as UserRow | undefined;
    return row ? toUser(row) : undefined;
  }

  /** A user whose name equals this without regard to case (a directory user may not take it). */
  byNameAnyCase(name: string): User | undefined {
    const row = this.store.statement('SELECT * FROM users WHERE name = ? COLLATE NOCASE').get(name) as UserRow | undefined;
    return row ? toUser(row) : undefined;
  }

  list(): User[] {
    return (this.store.statement('SELECT * FROM users ORDER BY name').all() as UserRow[]).map(toUser);
  }

  count(): number {
    return (this.store.statement('SELECT count(*) AS n FROM users').get() as { n: number }).n;
  }

  disable(id: number): void {
    this.store.statement('UPDATE users SET disabled_at = coalesce(disabled_at, ?) WHERE id = ?').run(new Date().toISOString(), id);
  }

  addToken(userId: number, secretSha256: string, label: string, expiresAt: Date | undefined): ApiToken {
    const info = this.store
      .statement('INSERT INTO api_tokens (user_id, secret_sha256, label, created_at, expires_at) VALUES (?, ?, ?, ?, ?)')
      .run(userId, secretSha256, label, new Date().toISOString(), expiresAt?.toISOString() ?? null);
    return this.token(Number(info.lastInsertRowid))!;
  }

  token(id: number): ApiToken | undefined {
    const row = this.store.statement('SELECT id, user_id, label, created_at, expires_at, revoked_at, last_used_at FROM api_tokens WHERE id = ?').get(id) as
      | TokenRow
      | undefined;
    return row ? toToken(row) : undefined;
  }

  /** The token whose secret hashes to this, with the hash as stored (the secret itself never is). */
  tokenByHash(secretSha256: string): { token: ApiToken; storedSha256: string } | undefined {
    const row = this.store.statement('SELECT * FROM api_tokens WHERE secret_sha256 = ?').get(secretSha256) as
      | (TokenRow & { secret_sha256: string })
      | undefined;
    return row ? { token: toToken(row), storedSha256: row.secret_sha256 } : undefined;
  }

  tokens(userId?: number): ApiToken[] {
    const rows = this.store
      .statement('SELECT id, user_id, label, created_at, expires_at, revoked_at, last_used_at FROM api_tokens WHERE (? IS NULL OR user_id = ?) ORDER BY id')
      .all(userId ?? null, userId ?? null) as TokenRow[];
    return rows.map(toToken);
  }

  setTokenExpiry(id: number, expiresAt: Date): void {
    this.store.statement('UPDATE api_tokens SET expires_at = ? WHERE id = ?').run(expiresAt.toISOString(), id);
  }

  revokeToken(id: number): void {
    this.store.statement('UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?').run(new Date().toISOString(), id);
  }
}
