import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { Counter, type Registry } from 'prom-client';
import type { DirectoryConfig } from '../config/authSchema.js';
import { AgentError, DirectoryError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import type { Repositories } from '../store/repositories.js';
import type { DirectoryUser, Session } from '../store/sessionRepository.js';
import { accessOf, type Access } from './grants.js';
import type { SessionWatch } from './sessionWatch.js';
import type { Directory, DirectoryAccount, LoginRefusal } from './types.js';

/** What the directory says of an account that is closed: its verifier goes. */
const CLOSED = new Set<LoginRefusal>(['disabled', 'locked', 'expired', 'password-expired']);

/** A login the agent refuses or cannot carry out; `code` is the API's answer. */
export class LoginError extends AgentError {
  constructor(
    readonly code: 'LOGIN_FAILED' | 'NO_ACCESS' | 'DIRECTORY_OFF',
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, options);
  }
}

/** Without a service account a session cannot be looked at again: it ends this soon, so a leaver keeps access this long at most. */
export const UNCHECKED_SESSION_MS = 15 * 60_000;

const scryptAsync = promisify(scrypt) as (password: string, salt: Buffer, keylen: number, options: { N: number; r: number; p: number }) => Promise<Buffer>;
/** scrypt cost of the cached-login verifier: about 50 ms a guess on the gateway (N 2^15, r 8, p 1, 64 MiB at most). */
const SCRYPT = { N: 32_768, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

async function makeVerifier(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scryptAsync(password, salt, 32, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

async function checkVerifier(password: string, verifier: string): Promise<boolean> {
  const [kind, n, r, p, salt, hash] = verifier.split('$');
  if (kind !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const got = await scryptAsync(password, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: SCRYPT.maxmem,
  } as never);
  return timingSafeEqual(got, expected);
}

export interface LoginDeps {
  log: Logger;
  config: () => DirectoryConfig;
  directory: () => Directory | undefined;
  store: Store;
  repos: Pick<Repositories, 'sessions' | 'users' | 'audit'>;
  registry: Registry;
  /** Ends the other sessions of a user a login finds without access. */
  watch?: Pick<SessionWatch, 'end' | 'tell'>;
}

/** What a login made: the session (its secret is the caller's, which only gave its hash). */
export interface LoginResult {
  session: Session;
  groups: string[];
}

/**
 * Directory logins: the password checked by the directory (or, while the
 * directory cannot be reached and the configuration allows it, against the
 * verifier of the user's last online login), the access worked out from the
 * groups (grants.ts), and the session committed with its audit entry before
 * the answer leaves. Every refusal is audited by the caller (sessionRoutes)
 * with its reason; the password is never stored in clear, logged or echoed.
 */
export class DirectoryLogins {
  private readonly outcomes: Counter<'outcome'>;

  constructor(private readonly deps: LoginDeps) {
    this.outcomes = new Counter({
      name: 'edge_agent_directory_logins_total',
      help: 'Directory logins by outcome: ok, cached (offline, against the verifier), failed (name or password), refused (no access), unavailable, limited',
      labelNames: ['outcome'],
      registers: [deps.registry],
    });
    for (const outcome of ['ok', 'cached', 'failed', 'refused', 'unavailable', 'limited']) this.outcomes.inc({ outcome }, 0);
  }

  count(outcome: 'ok' | 'cached' | 'failed' | 'refused' | 'unavailable' | 'limited'): void {
    this.outcomes.inc({ outcome });
  }

  /** Logs in `name` with `password` from `address`; the session's secret is the caller's (only its hash comes here). */
  async login(name: string, password: string, address: string, secretSha256: string): Promise<LoginResult> {
    const config = this.deps.config();
    const directory = this.deps.directory();
    if (!config.enabled || !directory) throw new LoginError('DIRECTORY_OFF', 'directory logins are not configured on this gateway (auth.directory.enabled)');
    let account: DirectoryAccount;
    try {
      account = await directory.login(name, password);
    } catch (err) {
      if (err instanceof AgentError && err.code === 'DIRECTORY_UNAVAILABLE' && config.offline.cachedLogins) {
        const cached = await this.cachedLogin(name, password, address, secretSha256, config);
        if (cached) return cached;
      }
      // The directory says the account is disabled, locked or expired: a verifier kept for it must not let it in offline.
      if (err instanceof DirectoryError && err.refusal && CLOSED.has(err.refusal)) {
        const known = this.known(name);
        if (known?.verifier) this.deps.store.durable(() => this.deps.repos.sessions.setVerifier(known.id, undefined, new Date()));
      }
      throw err;
    }
    const now = new Date();
    // A server that gives no objectGUID (not an Active Directory) would have every account share one gateway user.
    if (!/^[0-9a-f]{32}$/.test(account.guid))
      throw new LoginError('NO_ACCESS', `the directory gives ${account.name} no objectGUID: auth.directory needs an Active Directory`, {
        details: { refusal: 'no-guid' },
      });
    const local = this.deps.repos.users.byNameAnyCase(account.name);
    if (local)
      throw new LoginError(
        'NO_ACCESS',
        `a local user of this gateway is named ${local.name}: the directory user ${account.name} cannot log in until it is renamed`,
        {
          details: { refusal: 'local-name' },
        },
      );
    const access = accessOf(account, config.groups, now);
    const verifier = access.ok && config.offline.cachedLogins ? await makeVerifier(password) : undefined;
    const { sessions } = this.deps.repos;
    const made = this.deps.store.durable(() => {
      const user = sessions.upsertUser(account, now);
      const before = user.role ? { role: user.role, ...user.grant } : undefined;
      const after = access.ok ? { role: access.role, ...access.grant } : undefined;
      sessions.setGrant(user.id, access.ok ? access.role : undefined, access.ok ? access.grant : undefined);
      if (before && JSON.stringify(before) !== JSON.stringify(after))
        this.deps.repos.audit.add({
          actor: user.name,
          role: access.ok ? access.role : '-',
          action: 'user.change',
          target: user.name,
          outcome: 'done',
          details: { by: 'directory', at: 'login', from: before, to: after ?? { role: null, why: access.ok ? undefined : access.why } },
        });
      if (!access.ok) {
        sessions.setVerifier(user.id, undefined, now);
        // Their other sessions end now, not at the next check: the directory has just said they have no access.
        const ended = sessions
          .live()
          .filter((s) => s.userId === user.id && this.deps.watch?.end(s, 'deprovisioned', `deprovisioned at a login: ${access.why}`, now))
          .map((s) => s.id);
        return { user, session: undefined, ended };
      }
      if (user.disabledAt) return { user, session: undefined, ended: [] as number[] };
      sessions.setVerifier(user.id, verifier, now);
      const session = sessions.create({
        userId: user.id,
        secretSha256,
        role: access.role,
        grant: access.grant,
        cached: false,
        address,
        expiresAt: this.expiry(access, now, config, directory.canRecheck),
        now,
      });
      this.audit(session, address, 'directory', access.groups);
      return { user, session, ended: [] as number[] };
    });
    if (made.ended?.length) this.deps.watch?.tell(made.ended, 'deprovisioned');
    if (!access.ok) throw new LoginError('NO_ACCESS', `${account.name} may not use this gateway: ${access.why}`, { details: { refusal: access.refusal } });
    if (!made.session)
      throw new LoginError('NO_ACCESS', `${account.name} is disabled on this gateway by an administrator`, { details: { refusal: 'disabled-here' } });
    this.count('ok');
    this.deps.log.info({ user: account.name, role: access.role, session: made.session.id, address }, 'directory login');
    return { session: made.session, groups: access.groups };
  }

  /** When the session ends: after sessionHours, at the end of the grant, and soon when it cannot be looked at again. */
  private expiry(access: Extract<Access, { ok: true }>, now: Date, config: DirectoryConfig, canRecheck: boolean): Date {
    let end = now.getTime() + config.sessionHours * 3_600_000;
    if (access.grant.until) end = Math.min(end, Date.parse(access.grant.until));
    if (!canRecheck) end = Math.min(end, now.getTime() + UNCHECKED_SESSION_MS);
    return new Date(end);
  }

  private audit(session: Session, address: string, source: 'directory' | 'cached', groups: string[]): void {
    this.deps.repos.audit.add({
      actor: session.userName,
      role: session.role,
      action: 'login',
      target: `session ${session.id}`,
      outcome: 'done',
      details: { address, source, expiresAt: session.expiresAt.toISOString(), ...session.grant, ...(groups.length > 0 ? { groups } : {}) },
    });
  }

  /** The directory user a login name stands for on this gateway: by name, or by UPN. */
  private known(name: string): DirectoryUser | undefined {
    const { sessions } = this.deps.repos;
    return sessions.userByName(name) ?? sessions.users().find((u) => u.upn?.toLowerCase() === name.toLowerCase());
  }

  /**
   * The directory cannot be reached: a user whose last online login is
   * younger than cachedLoginMaxAgeHours logs in against its verifier, with
   * the access of that login (still within its end), if nothing since took
   * it away. Undefined: no cached login applies (the caller reports the
   * directory as unavailable).
   */
  private async cachedLogin(name: string, password: string, address: string, secretSha256: string, config: DirectoryConfig): Promise<LoginResult | undefined> {
    const { sessions } = this.deps.repos;
    const user = this.known(name);
    const now = new Date();
    if (!user?.verifier || !user.verifierAt || !user.role || !user.grant || user.disabledAt) return undefined;
    if (this.deps.repos.users.byNameAnyCase(user.name)) return undefined;
    const maxAge = config.offline.cachedLoginMaxAgeHours * 3_600_000;
    if (now.getTime() - user.verifierAt.getTime() > maxAge) return undefined;
    if (user.grant.until && Date.parse(user.grant.until) <= now.getTime()) return undefined;
    if (!(await checkVerifier(password, user.verifier)))
      throw new LoginError('LOGIN_FAILED', 'wrong user name or password (checked offline: the directory cannot be reached)');
    const expiresAt = new Date(
      Math.min(
        now.getTime() + config.sessionHours * 3_600_000,
        user.verifierAt.getTime() + maxAge,
        user.grant.until ? Date.parse(user.grant.until) : Number.POSITIVE_INFINITY,
      ),
    );
    const session = this.deps.store.durable(() => {
      const made = sessions.create({ userId: user.id, secretSha256, role: user.role!, grant: user.grant!, cached: true, address, expiresAt, now });
      this.audit(made, address, 'cached', []);
      return made;
    });
    this.count('cached');
    this.deps.log.warn({ user: user.name, session: session.id, address }, 'directory unreachable: cached login');
    return { session, groups: [] };
  }
}
