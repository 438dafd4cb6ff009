import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ConsoleSessionRepository } from '../store/consoleSessionRepository.js';
import type { SessionRepository } from '../store/sessionRepository.js';
import type { Role, UserRepository } from '../store/userRepository.js';
import { localPrincipal, sessionPrincipal, type Principal } from './principal.js';

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

/** API tokens are `eat_` and 43 base64url characters (32 random bytes); directory sessions `eas_` and the same. */
const TOKEN = /^eat_[A-Za-z0-9_-]{43}$/;
const SESSION_TOKEN = /^eas_[A-Za-z0-9_-]{43}$/;
/** The web console's cookie: `ecs_` and the same; it stands for a token or session (console_sessions) and is taken from the cookie only. */
export const CONSOLE_SECRET = /^ecs_[A-Za-z0-9_-]{43}$/;

export const hashSecret = (secret: string): string => createHash('sha256').update(secret).digest('hex');

/** A new token secret; shown once, stored only as its SHA-256. */
export function newTokenSecret(): string {
  return `eat_${randomBytes(32).toString('base64url')}`;
}

/** A new console secret: the cookie's, stored only as its SHA-256. */
export function newConsoleSecret(): string {
  return `ecs_${randomBytes(32).toString('base64url')}`;
}

/** A new session secret; handed to the user who logged in, stored only as its SHA-256. */
export function newSessionSecret(): string {
  return `eas_${randomBytes(32).toString('base64url')}`;
}

/** Every role: the three of local users, and `contractor`, which only the directory gives. */
export type AnyRole = Role | 'contractor';

/**
 * How far a permission reaches, which decides whether a user scoped to part
 * of the plant may have it: `devices` and `runs` routes answer only about
 * devices inside the scope and runs the user started; `self` is about the
 * caller; `plant` shows or changes the whole gateway, so a scoped user never
 * has it (not even counts of what lies outside).
 */
export type Reach = 'devices' | 'runs' | 'self' | 'plant';

const ALL = ['admin', 'technician', 'contractor', 'viewer'] as const;
const STAFF = ['admin', 'technician'] as const;

/**
 * What each role may do, in one table (docs/api.md shows it; the
 * authorisation tests have their own copy, written out role by role).
 * `viewer` reads devices and status; `contractor` (directory users only) reads
 * the devices of their scope, runs discovery in their ranges and, when their
 * mapping says mayDecide, approves and rejects there; `technician` discovers,
 * decides on approvals, annotates, makes enrollment tokens, syncs now and
 * reads everything else; only `admin` withdraws certificates, reconciles,
 * re-sends refused items and manages users. A scoped user (every
 * contractor, a technician whose mapping gives a scope) has only the
 * permissions that do not reach the whole plant (`permitted`).
 */
export const PERMISSIONS = {
  'devices.read': { roles: ALL, reach: 'devices' },
  'status.read': { roles: ALL, reach: 'self' },
  'sync.read': { roles: ['admin', 'technician', 'viewer'], reach: 'plant' },
  'discovery.read': { roles: ['admin', 'technician', 'contractor'], reach: 'runs' },
  'discovery.run': { roles: ['admin', 'technician', 'contractor'], reach: 'runs' },
  'devices.decide': { roles: ['admin', 'technician', 'contractor'], reach: 'devices' },
  'devices.annotate': { roles: STAFF, reach: 'devices' },
  'devices.enroll': { roles: STAFF, reach: 'plant' },
  'certificates.read': { roles: STAFF, reach: 'plant' },
  'sync.now': { roles: STAFF, reach: 'plant' },
  'sync.deadLetters.read': { roles: STAFF, reach: 'plant' },
  'audit.read': { roles: STAFF, reach: 'plant' },
  'devices.retire': { roles: ['admin'], reach: 'devices' },
  'certificates.revoke': { roles: ['admin'], reach: 'plant' },
  'sync.reconcile': { roles: ['admin'], reach: 'plant' },
  'sync.deadLetters.retry': { roles: ['admin'], reach: 'plant' },
  'users.manage': { roles: ['admin'], reach: 'plant' },
  'config.read': { roles: ['admin', 'technician', 'viewer'], reach: 'plant' },
  'config.assign': { roles: STAFF, reach: 'devices' },
  'config.manage': { roles: ['admin'], reach: 'plant' },
  'report.read': { roles: ['admin', 'technician', 'viewer'], reach: 'plant' },
} as const satisfies Record<string, { roles: readonly AnyRole[]; reach: Reach }>;

export type Permission = keyof typeof PERMISSIONS;

/** Who a request is from, as far as permissions go (Principal in principal.ts has the rest). */
export interface Holder {
  role: AnyRole;
  scope?: readonly unknown[];
  mayDecide?: boolean;
}

/**
 * Why `who` may not have `permission`, or undefined when they may: the role
 * must be in the permission's row; a contractor decides only with
 * mayDecide; a scoped user never has a permission that reaches the plant.
 */
export function refusal(who: Holder, permission: Permission): string | undefined {
  const row = PERMISSIONS[permission];
  if (!(row.roles as readonly AnyRole[]).includes(who.role)) return `the ${who.role} role may not do this (${permission})`;
  if (permission === 'devices.decide' && who.role === 'contractor' && !who.mayDecide)
    return 'your contractor mapping does not let you approve or reject (mayDecide)';
  if (who.scope && row.reach === 'plant') return `your access is scoped to part of the plant, and this shows or changes the whole gateway (${permission})`;
  return undefined;
}

export const permitted = (who: Holder, permission: Permission): boolean => refusal(who, permission) === undefined;

/** Every permission `who` has, in table order. */
export const permissionsOf = (who: Holder): Permission[] => (Object.keys(PERMISSIONS) as Permission[]).filter((p) => permitted(who, p));

/**
 * `unconfirmed`: the first-start token, while admin.token cannot be read to confirm it is still held (see firstAdmin.ts).
 * `ended`: a session that was ended (logout, or the directory took the access away).
 */
export type AuthFailure = 'missing' | 'malformed' | 'unknown' | 'expired' | 'revoked' | 'disabled' | 'unconfirmed' | 'ended';

/** A failure of a credential that exists (expired, revoked, ended, disabled) names whose it is, for the log; never its secret. */
export type AuthResult = { ok: true; principal: Principal; secretSha256: string } | { ok: false; failure: AuthFailure; credential?: string; name?: string };

type AuthRepos = { users: UserRepository; sessions: SessionRepository; consoleSessions: ConsoleSessionRepository };

/**
 * Checks an Authorization header: `Bearer eat_...` (a local user's API token)
 * or `Bearer eas_...` (a directory user's session); with `fromCookie`, the
 * console's `ecs_...` secret instead, which stands for one of those (and is
 * refused as a Bearer token: a cookie is never a credential outside the
 * browser's CSRF rule). A secret is looked up by its SHA-256, so what an
 * index lookup's timing could reveal is about hashes, not secrets; the
 * stored hash is then compared in constant time.
 */
export function authenticate(header: string | undefined, repos: AuthRepos, now: Date = new Date(), fromCookie = false): AuthResult {
  if (!header) return { ok: false, failure: 'missing' };
  const m = /^Bearer (\S+)$/.exec(header);
  const secret = m?.[1] ?? '';
  if (fromCookie !== CONSOLE_SECRET.test(secret)) return { ok: false, failure: 'malformed' };
  if (fromCookie) {
    const hash = hashSecret(secret);
    const found = repos.consoleSessions.byHash(hash);
    if (!found || !timingSafeEqual(Buffer.from(found.storedSha256, 'hex'), Buffer.from(hash, 'hex'))) return { ok: false, failure: 'unknown' };
    const c = found.session;
    if (c.endedAt) return { ok: false, failure: 'ended', credential: `console ${c.id}` };
    if (c.expiresAt && c.expiresAt <= now) return { ok: false, failure: 'expired', credential: `console ${c.id}` };
    return byHash(c.credentialSha256, c.credentialKind === 'session', repos, now);
  }
  const session = SESSION_TOKEN.test(secret);
  if (!session && !TOKEN.test(secret)) return { ok: false, failure: 'malformed' };
  return byHash(hashSecret(secret), session, repos, now);
}

/** The token or directory session whose secret has this SHA-256, checked (revoked, expired, ended, disabled). */
function byHash(hash: string, session: boolean, repos: AuthRepos, now: Date): AuthResult {
  const same = (stored: string) => timingSafeEqual(Buffer.from(stored, 'hex'), Buffer.from(hash, 'hex'));
  if (session) {
    const found = repos.sessions.byHash(hash);
    if (!found || !same(found.storedSha256)) return { ok: false, failure: 'unknown' };
    const s = found.session;
    const named = { credential: `session ${s.id}`, name: s.userName };
    if (s.endedAt) return { ok: false, failure: 'ended', ...named };
    if (s.expiresAt <= now) return { ok: false, failure: 'expired', ...named };
    if (repos.sessions.user(s.userId)?.disabledAt) return { ok: false, failure: 'disabled', ...named };
    return { ok: true, principal: sessionPrincipal(s), secretSha256: hash };
  }
  const found = repos.users.tokenByHash(hash);
  if (!found || !same(found.storedSha256)) return { ok: false, failure: 'unknown' };
  const token = found.token;
  const user = repos.users.get(token.userId);
  const named = { credential: `token ${token.id}`, ...(user ? { name: user.name } : {}) };
  if (token.revokedAt) return { ok: false, failure: 'revoked', ...named };
  if (token.expiresAt && token.expiresAt <= now) return { ok: false, failure: 'expired', ...named };
  if (!user || user.disabledAt) return { ok: false, failure: 'disabled', ...named };
  return { ok: true, principal: localPrincipal(user, token), secretSha256: hash };
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

  /** How many failures `key` has within the window. */
  count(key: string, now = Date.now()): number {
    return this.recent(key, now).length;
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
