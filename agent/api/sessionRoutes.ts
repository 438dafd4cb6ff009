import { Counter, type Registry } from 'prom-client';
import { z } from 'zod';
import type { DirectoryLogins } from '../directory/logins.js';
import type { SessionWatch } from '../directory/sessionWatch.js';
import { AgentError, DirectoryError } from '../errors.js';
import { API_ERRORS, type ApiErrorCode } from '../errorTable.js';
import type { Logger } from '../log.js';
import type { Repositories } from '../store/repositories.js';
import { addressKey, FailureCounter, hashSecret, newSessionSecret } from './auth.js';
import { LogThrottle } from './logThrottle.js';
import { describePrincipal, sessionPrincipal } from './principal.js';
import type { Session } from '../store/sessionRepository.js';
import { ApiError, type Route, type RouteContext } from './router.js';

/**
 * Failed logins of one user name (from anywhere; `anna` and `anna@plant.example` count as one) within
 * NAME_WINDOW_MS: at most 10 an hour reach the directory, under AD's usual lockout thresholds.
 */
export const NAME_FAILURE_LIMIT = 5;
export const NAME_WINDOW_MS = 30 * 60_000;
/** Failed logins from one address (an IPv6 /64) within ADDRESS_WINDOW_MS. */
export const ADDRESS_LOGIN_LIMIT = 20;
export const ADDRESS_WINDOW_MS = 5 * 60_000;
/** Logins waiting on the directory at once, at most: beyond, 429 at once (a flood must not become parallel guesses or hold the listener). */
export const MAX_LOGINS_IN_FLIGHT = 16;
/** How late a refusal over a limit is answered, and how many such late answers are held at once at most (beyond, they go at once). */
const LIMITED_DELAY_MS = 1_000;
const MAX_DELAYED = 32;
/** A failed login is answered no sooner than this after it came: an unknown name and a wrong password take the same time. */
const FAILURE_FLOOR_MS = 400;
/** Login failures of one name a minute written to the audit log; beyond, counted and logged. */
const AUDITED_FAILURES_PER_MINUTE = 10;

/**
 * A login name: a sAMAccountName-like name or a UPN (name@domain), ASCII
 * only. LDAP filter characters (* ( ) \ NUL), spaces and look-alike
 * letters from other scripts are refused before anything reaches the
 * directory; the directory client escapes filter values all the same.
 */
export const LOGIN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,188}[A-Za-z0-9])?)?$/;

/** A login name and password as a login takes them (checked before anything reaches the directory). */
export const loginName = z
  .string()
  .max(256, 'at most 256 characters')
  .regex(LOGIN_NAME, 'a login name (letters, digits, . _ -) or a UPN such as anna@plant.example');
export const loginPassword = z
  .string()
  .min(1, 'must not be empty (an empty password is never sent to the directory)')
  .max(1_024, 'at most 1024 characters')
  .refine((p) => !p.includes('\u0000'), 'must not hold NUL');

const loginBody = z.strictObject({ user: loginName, password: loginPassword });

export interface SessionRouteDeps {
  log: Logger;
  registry: Registry;
  logins: DirectoryLogins;
  watch: Pick<SessionWatch, 'end' | 'tell'>;
  repos: Pick<Repositories, 'audit' | 'sessions'>;
}

/** Directory logins behind their limits: the API's login and the console's sign-in share one gate (one count per name and address). */
export interface LoginGate {
  /** A login body that did not parse: counted against the address. */
  badRequest(address: string, err: unknown): void;
  /** Logs `user` in, or throws the ApiError to answer; the session's secret is made here and returned once. */
  login(ctx: RouteContext, user: string, password: string): Promise<{ secret: string; session: Session }>;
}

/**
 * Failed logins are limited per user name and per address before the
 * directory is asked; a session already held is never touched by them (the
 * guard serves a valid token whatever its address did).
 */
export function loginGate(deps: SessionRouteDeps): LoginGate {
  const names = new FailureCounter(NAME_FAILURE_LIMIT, NAME_WINDOW_MS);
  const addresses = new FailureCounter(ADDRESS_LOGIN_LIMIT, ADDRESS_WINDOW_MS);
  /**
   * Tries waiting on the directory, per name and per address: they count against the limits until they end,
   * so that parallel guesses get no more tries than sequential ones.
   */
  const pending = new Map<string, number>();
  let inFlight = 0;
  let delayed = 0;
  const busy = (key: string) => pending.get(key) ?? 0;
  const hold = (keys: string[], by: 1 | -1) => {
    for (const k of keys) {
      const n = busy(k) + by;
      if (n === 0) pending.delete(k);
      else pending.set(k, n);
    }
    inFlight += by;
  };
  const audited = new FailureCounter(AUDITED_FAILURES_PER_MINUTE, 60_000);
  const log = new LogThrottle(deps.log, { perKey: 5, perWindow: 60, windowMs: 60_000 });
  const failures = new Counter({
    name: 'edge_agent_login_failures_total',
    help: 'Failed directory logins, by reason: bad-request, limited, bad-credentials, no-access, unavailable, certificate, off',
    labelNames: ['reason'],
    registers: [deps.registry],
  });
  const fail = (reason: string, name: string | undefined, address: string, message: string) => {
    failures.inc({ reason });
    log.warn(address, { user: name, address, reason }, 'directory login refused', 'directory login refusals not logged (too many)');
    const key = name?.toLowerCase() ?? `address ${address}`;
    if (audited.over(key)) return;
    audited.fail(key);
    deps.repos.audit.add({
      actor: name ?? '(invalid name)',
      role: '-',
      action: 'login',
      target: 'session',
      outcome: 'refused',
      details: { address, reason, message },
    });
  };
  return {
    badRequest: (address, err) => {
      addresses.fail(addressKey(address));
      if (err instanceof ApiError) fail('bad-request', undefined, address, err.message);
    },
    login: async (ctx, user, password) => {
      const address = ctx.req.socket.remoteAddress ?? '?';
      const source = addressKey(address);
      const nameKey = `name ${user.toLowerCase().split('@')[0]}`;
      const sourceKey = `address ${source}`;
      const overName = names.count(nameKey) + busy(nameKey) >= NAME_FAILURE_LIMIT;
      const overAddress = addresses.count(source) + busy(sourceKey) >= ADDRESS_LOGIN_LIMIT;
      if (overName || overAddress || inFlight >= MAX_LOGINS_IN_FLIGHT) {
        const wait = Math.max(overName ? names.waitMs(nameKey) : 0, overAddress ? addresses.waitMs(source) : 0, 1_000);
        deps.logins.count('limited');
        fail('limited', user, address, overName || overAddress ? 'too many failed logins' : 'too many logins at once');
        if (delayed < MAX_DELAYED) {
          delayed += 1;
          await new Promise((resolve) => setTimeout(resolve, LIMITED_DELAY_MS));
          delayed -= 1;
        }
        ctx.res.setHeader('retry-after', String(Math.ceil(wait / 1000)));
        ctx.res.setHeader('connection', 'close');
        throw new ApiError('TOO_MANY_LOGINS', 'too many failed logins for this user name or from this address, or too many at once: wait and try again');
      }
      const secret = newSessionSecret();
      const started = Date.now();
      hold([nameKey, sourceKey], 1);
      try {
        const { session } = await deps.logins.login(user, password, address, hashSecret(secret));
        return { secret, session };
      } catch (err) {
        if (!(err instanceof AgentError)) throw err;
        // A file auth.directory names that cannot be read (the CA, the service password) keeps the directory out of reach: said as such.
        if (err.code === 'CONFIG_FILE_UNUSABLE' || err.code === 'CA_PASSPHRASE_UNREADABLE') {
          deps.logins.count('unavailable');
          fail('unavailable', user, address, err.message);
          throw new ApiError('DIRECTORY_UNAVAILABLE', `the directory cannot be used: ${err.message}`);
        }
        if (!(err.code in API_ERRORS)) throw err;
        const code = err.code as ApiErrorCode;
        const reason =
          code === 'LOGIN_FAILED'
            ? 'bad-credentials'
            : code === 'NO_ACCESS'
              ? 'no-access'
              : code === 'DIRECTORY_CERTIFICATE'
                ? 'certificate'
                : code === 'DIRECTORY_OFF'
                  ? 'off'
                  : 'unavailable';
        if (code === 'LOGIN_FAILED') {
          names.fail(nameKey);
          addresses.fail(source);
          deps.logins.count('failed');
        } else if (code === 'NO_ACCESS') deps.logins.count('refused');
        else if (code === 'DIRECTORY_UNAVAILABLE' || code === 'DIRECTORY_CERTIFICATE') deps.logins.count('unavailable');
        const refusal = err instanceof DirectoryError ? err.refusal : err.details.refusal;
        fail(reason, user, address, `${err.message}${refusal ? ` (${String(refusal)})` : ''}`);
        // A wrong name and a wrong password read the same, and take the same time: the directory's finer reason goes to the log and the audit only.
        if (code === 'LOGIN_FAILED') {
          await new Promise((resolve) => setTimeout(resolve, Math.max(0, started + FAILURE_FLOOR_MS - Date.now())));
          throw new ApiError('LOGIN_FAILED', 'wrong user name or password');
        }
        throw new ApiError(code, err.message);
      } finally {
        hold([nameKey, sourceKey], -1);
      }
    },
  };
}

/** Directory sessions: log in (the one route without a token), log out. */
export function sessionRoutes(deps: SessionRouteDeps, gate: LoginGate): Route[] {
  return [
    {
      method: 'POST',
      path: '/api/v1/session',
      permission: 'anyone',
      summary: 'log in a directory user: body {user, password}; 201 {token, session}; the token (shown this once) is the Bearer of later requests',
      handle: async (ctx) => {
        let b: z.infer<typeof loginBody>;
        try {
          b = await ctx.body(loginBody);
        } catch (err) {
          gate.badRequest(ctx.req.socket.remoteAddress ?? '?', err);
          throw err;
        }
        const { secret, session } = await gate.login(ctx, b.user, b.password);
        return { status: 201, body: { token: secret, session: { id: session.id, user: session.userName, ...describePrincipal(sessionPrincipal(session)) } } };
      },
    },
    {
      method: 'DELETE',
      path: '/api/v1/session',
      permission: 'status.read',
      summary: "log out: end the caller's directory session at once (its open streams close)",
      handle: async (ctx) => {
        await ctx.noBody();
        const session = ctx.user.session;
        if (!session)
          throw new ApiError('NO_SESSION', 'this token is not a directory session; an administrator revokes API tokens (POST /api/v1/tokens/{id}/revoke)');
        const ended = ctx.commit(() => deps.watch.end(session, 'logout', 'logout'));
        if (ended) deps.watch.tell([session.id], 'logout');
        const after = deps.repos.sessions.get(session.id)!;
        return { body: { session: { id: after.id, user: after.userName, endedAt: after.endedAt?.toISOString(), endReason: after.endReason } } };
      },
    },
  ];
}
