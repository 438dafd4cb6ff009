import type { ScopePart } from '../config/authSchema.js';
import type { Store } from './database.js';

export type DirectoryRole = 'admin' | 'technician' | 'contractor' | 'viewer';

/** What a directory user's groups give besides the role: where in the plant, until when, and a contractor's extras. */
export interface Grant {
  scope?: ScopePart[];
  mayDecide?: boolean;
  ranges?: string[];
  /** The last moment of access (a mapping's until, the account's expiry), ISO. */
  until?: string;
}

export interface DirectoryUser {
  id: number;
  guid: string;
  name: string;
  dn: string;
  upn?: string;
  displayName?: string;
  /** The role and grant of the last login or check (none: no access then). */
  role?: DirectoryRole;
  grant?: Grant;
  /** Salted scrypt verifier of the last online login, only with auth.directory.offline.cachedLogins. */
  verifier?: string;
  verifierAt?: Date;
  disabledAt?: Date;
  firstLoginAt: Date;
  lastLoginAt: Date;
}

export interface Session {
  id: number;
  userId: number;
  userName: string;
  guid: string;
  role: DirectoryRole;
  grant: Grant;
  /** Made by an offline login against the cached verifier. */
  cached: boolean;
  address: string;
  createdAt: Date;
  expiresAt: Date;
  verifiedAt: Date;
  endedAt?: Date;
  endReason?: string;
}

interface UserRow {
  id: number;
  guid: string;
  name: string;
  dn: string;
  upn: string | null;
  display_name: string | null;
  role: DirectoryRole | null;
  grant_json: string | null;
  verifier: string | null;
  verifier_at: string | null;
  disabled_at: string | null;
  first_login_at: string;
  last_login_at: string;
}

interface SessionRow {
  id: number;
  directory_user_id: number;
  user_name: string;
  guid: string;
  role: DirectoryRole;
  grant_json: string;
  cached: number;
  address: string;
  created_at: string;
  expires_at: string;
  verified_at: string;
  ended_at: string | null;
  end_reason: string | null;
}

const toUser = (r: UserRow): DirectoryUser => ({
  id: r.id,
  guid: r.guid,
  name: r.name,
  dn: r.dn,
  ...(r.upn ? { upn: r.upn } : {}),
  ...(r.display_name ? { displayName: r.display_name } : {}),
  ...(r.role ? { role: r.role } : {}),
  ...(r.grant_json ? { grant: JSON.parse(r.grant_json) as Grant } : {}),
  ...(r.verifier ? { verifier: r.verifier } : {}),
  ...(r.verifier_at ? { verifierAt: new Date(r.verifier_at) } : {}),
  ...(r.disabled_at ? { disabledAt: new Date(r.disabled_at) } : {}),
  firstLoginAt: new Date(r.first_login_at),
  lastLoginAt: new Date(r.last_login_at),
});

const toSession = (r: SessionRow): Session => ({
  id: r.id,
  userId: r.directory_user_id,
  userName: r.user_name,
  guid: r.guid,
  role: r.role,
  grant: JSON.parse(r.grant_json) as Grant,
  cached: r.cached === 1,
  address: r.address,
  createdAt: new Date(r.created_at),
  expiresAt: new Date(r.expires_at),
  verifiedAt: new Date(r.verified_at),
  ...(r.ended_at ? { endedAt: new Date(r.ended_at) } : {}),
  ...(r.end_reason ? { endReason: r.end_reason } : {}),
});

const SESSION = `SELECT s.*, u.name AS user_name, u.guid AS guid FROM sessions s JOIN directory_users u ON u.id = s.directory_user_id`;

/** Directory users and their sessions (migration 0011); a session by the SHA-256 of its secret only. */
export class SessionRepository {
  constructor(private readonly store: Store) {}

  /** The user of this account, made at their first login, else brought up to date (name, DN, UPN may change in the directory). */
  upsertUser(account: { guid: string; dn: string; name: string; upn?: string; displayName?: string }, now: Date): DirectoryUser {
    // A name another account held (a leaver's name given to a new hire, a rename): the old row keeps its history under name#guid.
    this.store
      .statement("UPDATE directory_users SET name = name || '#' || substr(guid, 1, 8), verifier = NULL WHERE name = ? COLLATE NOCASE AND guid <> ?")
      .run(account.name, account.guid);
    this.store
      .statement(
        `INSERT INTO directory_users (guid, name, dn, upn, display_name, first_login_at, last_login_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (guid) DO UPDATE SET name = excluded.name, dn = excluded.dn, upn = excluded.upn,
           display_name = excluded.display_name, last_login_at = excluded.last_login_at`,
      )
      .run(account.guid, account.name, account.dn, account.upn ?? null, account.displayName ?? null, now.toISOString(), now.toISOString());
    return this.userByGuid(account.guid)!;
  }

  user(id: number): DirectoryUser | undefined {
    const row = this.store.statement('SELECT * FROM directory_users WHERE id = ?').get(id) as UserRow | undefined;
    return row ? toUser(row) : undefined;
  }

  userByGuid(guid: string): DirectoryUser | undefined {
    const row = this.store.statement('SELECT * FROM directory_users WHERE guid = ?').get(guid) as UserRow | undefined;
    return row ? toUser(row) : undefined;
  }

  /** By login name, without regard to case (as the directory compares names). */
  userByName(name: string): DirectoryUser | undefined {
    const row = this.store.statement('SELECT * FROM directory_users WHERE name = ? COLLATE NOCASE').get(name) as UserRow | undefined;
    return row ? toUser(row) : undefined;
  }

  users(): DirectoryUser[] {
    return (this.store.statement('SELECT * FROM directory_users ORDER BY name').all() as UserRow[]).map(toUser);
  }

  setGrant(id: number, role: DirectoryRole | undefined, grant: Grant | undefined): void {
    this.store.statement('UPDATE directory_users SET role = ?, grant_json = ? WHERE id = ?').run(role ?? null, grant ? JSON.stringify(grant) : null, id);
  }

  setVerifier(id: number, verifier: string | undefined, at: Date): void {
    this.store.statement('UPDATE directory_users SET verifier = ?, verifier_at = ? WHERE id = ?').run(verifier ?? null, verifier ? at.toISOString() : null, id);
  }

  /** Users holding a cached-login verifier (the recheck looks at them too: a verifier must not outlive the access it stands for). */
  withVerifier(): DirectoryUser[] {
    return (this.store.statement('SELECT * FROM directory_users WHERE verifier IS NOT NULL ORDER BY id').all() as UserRow[]).map(toUser);
  }

  /** Deletes every verifier (cached logins switched off): none is left to be used should they be switched on again. */
  clearVerifiers(): number {
    return this.store.statement('UPDATE directory_users SET verifier = NULL, verifier_at = NULL WHERE verifier IS NOT NULL').run().changes;
  }

  /** Disabled on the gateway by an administrator: no login, whatever the directory says. */
  disableUser(id: number, now: Date): void {
    this.store.statement('UPDATE directory_users SET disabled_at = coalesce(disabled_at, ?), verifier = NULL WHERE id = ?').run(now.toISOString(), id);
  }

  create(s: {
    userId: number;
    secretSha256: string;
    role: DirectoryRole;
    grant: Grant;
    cached: boolean;
    address: string;
    expiresAt: Date;
    now: Date;
  }): Session {
    const info = this.store
      .statement(
        `INSERT INTO sessions (directory_user_id, secret_sha256, role, grant_json, cached, address, created_at, expires_at, verified_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        s.userId,
        s.secretSha256,
        s.role,
        JSON.stringify(s.grant),
        s.cached ? 1 : 0,
        s.address,
        s.now.toISOString(),
        s.expiresAt.toISOString(),
        s.now.toISOString(),
      );
    return this.get(Number(info.lastInsertRowid))!;
  }

  get(id: number): Session | undefined {
    const row = this.store.statement(`${SESSION} WHERE s.id = ?`).get(id) as SessionRow | undefined;
    return row ? toSession(row) : undefined;
  }

  /** The session whose secret hashes to this, with the hash as stored. */
  byHash(secretSha256: string): { session: Session; storedSha256: string } | undefined {
    const row = this.store.statement(`${SESSION} WHERE s.secret_sha256 = ?`).get(secretSha256) as (SessionRow & { secret_sha256: string }) | undefined;
    return row ? { session: toSession(row), storedSha256: row.secret_sha256 } : undefined;
  }

  /** Sessions not ended (some may be past their expiry: the sweep ends those). */
  live(): Session[] {
    return (this.store.statement(`${SESSION} WHERE s.ended_at IS NULL ORDER BY s.id`).all() as SessionRow[]).map(toSession);
  }

  /** Ends a live session; false when it had already ended. */
  end(id: number, reason: string, now: Date): boolean {
    return (
      this.store.statement('UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL').run(now.toISOString(), reason, id).changes > 0
    );
  }

  /** The directory was asked again: the role and grant it gives now. */
  verified(id: number, role: DirectoryRole, grant: Grant, expiresAt: Date, now: Date): boolean {
    return (
      this.store
        .statement('UPDATE sessions SET role = ?, grant_json = ?, expires_at = ?, verified_at = ? WHERE id = ? AND ended_at IS NULL')
        .run(role, JSON.stringify(grant), expiresAt.toISOString(), now.toISOString(), id).changes > 0
    );
  }
}
