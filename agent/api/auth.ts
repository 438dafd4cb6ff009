import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ApiToken, Role, User, UserRepository } from '../store/userRepository.js';

/** The token file made at the first start (in agent.dataDir), for the first administrator. */
export const ADMIN_TOKEN_FILE = 'admin.token';
/** Where the daemon writes the URL its API answers on (in agent.dataDir; http.port 0 picks a port at start). */
export const API_URL_FILE = 'api.url';

/** Tokens are `eat_` and 43 base64url characters (32 random bytes). */
const TOKEN = /^eat_[A-Za-z0-9_-]{43}$/;

export const hashSecret = (secret: string): string => createHash('sha256').update(secret).digest('hex');

/** A new token secret; shown once, stored only as its SHA-256. */
export function newTokenSecret(): string {
  return `eat_${randomBytes(32).toString('base64url')}`;
}

/**
 * What each role may do, in one table (docs/api.md shows it; the
 * authorisation test has its own copy, written out role by role).
 * `viewer` reads devices and status only; `technician` discovers, decides
 * on approvals, annotates, syncs now and reads everything else; only
 * `admin` withdraws certificates, reconciles, re-sends refused items and
 * manages users.
 */
export const PERMISSIONS = {
  'devices.read': ['admin', 'technician', 'viewer'],
  'status.read': ['admin', 'technician', 'viewer'],
  'sync.read': ['admin', 'technician', 'viewer'],
  'discovery.read': ['admin', 'technician'],
  'discovery.run': ['admin', 'technician'],
  'devices.decide': ['admin', 'technician'],
  'devices.annotate': ['admin', 'technician'],
  'certificates.read': ['admin', 'technician'],
  'sync.now': ['admin', 'technician'],
  'sync.deadLetters.read': ['admin', 'technician'],
  'audit.read': ['admin', 'technician'],
  'devices.retire': ['admin'],
  'certificates.revoke': ['admin'],
  'sync.reconcile': ['admin'],
  'sync.deadLetters.retry': ['admin'],
  'users.manage': ['admin'],
} as const satisfies Record<string, readonly Role[]>;

export type Permission = keyof typeof PERMISSIONS;

export function allowed(role: Role, permission: Permission): boolean {
  return (PERMISSIONS[permission] as readonly Role[]).includes(role);
}

export type AuthFailure = 'missing' | 'malformed' | 'unknown' | 'expired' | 'revoked' | 'disabled';

export type AuthResult = { ok: true; user: User; token: ApiToken } | { ok: false; failure: AuthFailure };

/**
 * Checks an Authorization header: `Bearer eat_...`. The secret is looked up
 * by its SHA-256, so what an index lookup's timing could reveal is about
 * hashes, not secrets; the stored hash is then compared in constant time.
 */
export function authenticate(header: string | undefined, users: UserRepository, now: Date = new Date()): AuthResult {
  if (!header) return { ok: false, failure: 'missing' };
  const m = /^Bearer (\S+)$/.exec(header);
  if (!m || !TOKEN.test(m[1]!)) return { ok: false, failure: 'malformed' };
  const hash = hashSecret(m[1]!);
  const found = users.tokenByHash(hash);
  if (!found || !timingSafeEqual(Buffer.from(found.storedSha256, 'hex'), Buffer.from(hash, 'hex'))) return { ok: false, failure: 'unknown' };
  const token = found.token;
  if (token.revokedAt) return { ok: false, failure: 'revoked' };
  if (token.expiresAt && token.expiresAt <= now) return { ok: false, failure: 'expired' };
  const user = users.get(token.userId);
  if (!user || user.disabledAt) return { ok: false, failure: 'disabled' };
  return { ok: true, user, token };
}

/**
 * Failed authentications per client address: after `limit` failures within
 * `windowMs`, that address is refused until the window has passed.
 */
export class FailureLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly limit = 10,
    private readonly windowMs = 60_000,
  ) {}

  blocked(address: string, now = Date.now()): boolean {
    const recent = (this.failures.get(address) ?? []).filter((t) => now - t < this.windowMs);
    if (recent.length === 0) this.failures.delete(address);
    else this.failures.set(address, recent);
    return recent.length >= this.limit;
  }

  fail(address: string, now = Date.now()): void {
    const recent = (this.failures.get(address) ?? []).filter((t) => now - t < this.windowMs);
    recent.push(now);
    this.failures.set(address, recent);
    if (this.failures.size > 10_000) this.failures.delete(this.failures.keys().next().value!);
  }
}
