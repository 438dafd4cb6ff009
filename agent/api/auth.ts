import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ApiToken, Role, User, UserRepository } from '../store/userRepository.js';

/** The token file made at the first start (in agent.dataDir), for the first administrator. */
export const ADMIN_TOKEN_FILE = 'admin.token';
/** Where the daemon writes the URL its API answers on (in agent.dataDir; http.port 0 picks a port at start). */
export const API_URL_FILE = 'api.url';

/**
 * The label of the token made at the first start. Reserved: no other token
 * may take it, so that the agent can tell that token apart (it lives while
 * admin.token holds it, FIRST_ADMIN_TOKEN_HOURS at most, and until an
 * administrator's own token is made).
 */
export const FIRST_ADMIN_TOKEN_LABEL = 'first start';
/** How long the first administrator's token lives at most. */
export const FIRST_ADMIN_TOKEN_HOURS = 24;

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
 * on approvals, annotates, makes enrollment tokens, syncs now and reads
 * everything else; only
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
  'devices.enroll': ['admin', 'technician'],
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

/** `unconfirmed`: the first-start token, while admin.token cannot be read to confirm it is still held (see firstAdmin.ts). */
export type AuthFailure = 'missing' | 'malformed' | 'unknown' | 'expired' | 'revoked' | 'disabled' | 'unconfirmed';

/** A failure of a token that exists (expired, revoked, disabled) names it, for the log; never its secret. */
export type AuthResult = { ok: true; user: User; token: ApiToken; secretSha256: string } | { ok: false; failure: AuthFailure; token?: ApiToken; user?: User };

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
  const user = users.get(token.userId);
  if (token.revokedAt) return { ok: false, failure: 'revoked', token, ...(user ? { user } : {}) };
  if (token.expiresAt && token.expiresAt <= now) return { ok: false, failure: 'expired', token, ...(user ? { user } : {}) };
  if (!user || user.disabledAt) return { ok: false, failure: 'disabled', token, ...(user ? { user } : {}) };
  return { ok: true, user, token, secretSha256: hash };
}

/**
 * The key failures of a client address are counted under: the address
 * itself for IPv4, its /64 for IPv6 (one host commonly holds a whole /64,
 * and would otherwise get a fresh allowance with every address of it).
 */
export function addressKey(address: string): string {
  const bare = address.split('%')[0]!;
  if (!bare.includes(':') || /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(bare)) return bare;
  const [head = '', tail] = bare.split('::');
  const groups = head === '' ? [] : head.split(':');
  if (tail !== undefined)
    groups.push(...Array(Math.max(0, 8 - groups.length - (tail === '' ? 0 : tail.split(':').length))).fill('0'), ...(tail === '' ? [] : tail.split(':')));
  return `${groups
    .slice(0, 4)
    .map((g) => (parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`;
}

/**
 * Failed authentications per key (a client address, or the credential a
 * client presents) within a sliding window. It only counts: what a count
 * over the limit means is the caller's decision. Memory is bounded: at most
 * `limit` times per key, and `maxKeys` keys (the oldest goes first).
 */
export class FailureCounter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    readonly limit: number,
    readonly windowMs: number,
    private readonly maxKeys = 10_000,
  ) {}

  private recent(key: string, now: number): number[] {
    const kept = (this.failures.get(key) ?? []).filter((t) => now - t < this.windowMs);
    if (kept.length === 0) this.failures.delete(key);
    else this.failures.set(key, kept);
    return kept;
  }

  /** Whether `key` has `limit` failures or more within the window. */
  over(key: string, now = Date.now()): boolean {
    return this.recent(key, now).length >= this.limit;
  }

  /** Records a failure; answers whether the key is now over its limit. */
  fail(key: string, now = Date.now()): boolean {
    const kept = this.recent(key, now);
    kept.push(now);
    if (kept.length > this.limit) kept.shift();
    // Refreshed keys move to the end, so the first is the least recent.
    this.failures.delete(key);
    this.failures.set(key, kept);
    if (this.failures.size > this.maxKeys) this.failures.delete(this.failures.keys().next().value!);
    return kept.length >= this.limit;
  }

  /** Milliseconds until `key` is under its limit again (0 when it is). */
  waitMs(key: string, now = Date.now()): number {
    const kept = this.recent(key, now);
    if (kept.length < this.limit) return 0;
    return kept[kept.length - this.limit]! + this.windowMs - now;
  }
}
