import type { IncomingMessage } from 'node:http';
import { Counter, type Registry } from 'prom-client';
import type { Logger } from '../log.js';
import type { Repositories } from '../store/repositories.js';
import { addressKey, authenticate, FailureCounter, hashSecret, type AuthFailure } from './auth.js';
import type { FirstAdminToken } from './firstAdmin.js';
import type { Principal } from './principal.js';
import { LogThrottle } from './logThrottle.js';
import type { Route } from './router.js';

/** Failed authentications a minute from one address before its failures are answered 429, late. */
export const ADDRESS_FAILURE_LIMIT = 30;
/** Failures a minute of one credential (the same wrong or ended token, from anywhere) before the same. */
export const CREDENTIAL_FAILURE_LIMIT = 10;
/** How late a failure over a limit is answered: a guesser waits, the listener does not. */
export const FAILURE_DELAY_MS = 1_000;
/**
 * Late answers held at once, at most (beyond, they go at once), and never more than a quarter of
 * http.maxConnections: a flood of failures must not hold the listener.
 */
const MAX_DELAYED = 64;
/** Refusals (403) of one user a minute written to the audit log; the rest are counted and logged. */
const AUDITED_REFUSALS_PER_MINUTE = 30;

/** The log field naming a failed credential by its number ('token 3', 'session 7', 'console 2'). */
const CREDENTIAL_FIELD: Record<string, string> = { token: 'tokenId', session: 'sessionId', console: 'consoleSessionId' };

export type Verdict =
  | { ok: true; principal: Principal }
  | { ok: false; code: 'UNAUTHENTICATED' | 'TOO_MANY_FAILURES'; message: string; retryAfterSeconds?: number };

export interface AuthGuardDeps {
  log: Logger;
  repos: Pick<Repositories, 'users' | 'audit' | 'sessions' | 'consoleSessions'>;
  registry: Registry;
  firstAdmin: Pick<FirstAdminToken, 'stillHeld'>;
  /** http.maxConnections: the late answers held keep a quarter of it at most. */
  maxConnections: number;
}

/**
 * Who is calling, and what a failure costs. A token that checks out is
 * always served, whatever others did before from the same address: the
 * check (a SHA-256, an index lookup, a constant-time compare) runs first and
 * is cheap, so it is never skipped. Failures are counted per client address
 * (an IPv6 one by its /64) and per presented credential; once either is over its limit, a failure is
 * answered 429 (not 401) and only after FAILURE_DELAY_MS, with the
 * connection closed, so a guesser gets one answer a second per connection
 * while a user with a good token on the same address is served at once
 * (late answers held at once are bounded, so the limiter cannot fill the
 * listener's connections).
 * Every failure is counted in /metrics by reason and logged (rate-limited,
 * never the token); a role refused a route (403) is audited.
 */
export class AuthGuard {
  private readonly addresses = new FailureCounter(ADDRESS_FAILURE_LIMIT, 60_000);
  private readonly credentials = new FailureCounter(CREDENTIAL_FAILURE_LIMIT, 60_000);
  private readonly refusals = new FailureCounter(AUDITED_REFUSALS_PER_MINUTE, 60_000);
  private readonly failureLog: LogThrottle;
  private readonly limitLog: LogThrottle;
  private readonly refusalLog: LogThrottle;
  private readonly failures: Counter<'reason'>;
  private readonly limited: Counter<'scope'>;
  private readonly forbidden: Counter<'permission'>;
  private delayed = 0;

  constructor(private readonly deps: AuthGuardDeps) {
    const registers = [deps.registry];
    this.failures = new Counter({
      name: 'edge_agent_api_auth_failures_total',
      help:
        'API requests refused for their token or session (401 or 429), by reason: ' +
        'missing, malformed, unknown, expired, revoked, disabled, unconfirmed, ended',
      labelNames: ['reason'],
      registers,
    });
    this.limited = new Counter({
      name: 'edge_agent_api_auth_limited_total',
      help: 'Failed authentications answered 429 because their address or credential was over its limit, by scope',
      labelNames: ['scope'],
      registers,
    });
    this.forbidden = new Counter({
      name: 'edge_agent_api_forbidden_total',
      help: 'API requests of authenticated users refused (403) for their role, by the permission the route needs',
      labelNames: ['permission'],
      registers,
    });
    for (const reason of ['missing', 'malformed', 'unknown', 'expired', 'revoked', 'disabled', 'unconfirmed', 'ended'] satisfies AuthFailure[])
      this.failures.inc({ reason }, 0);
    this.failureLog = new LogThrottle(deps.log, { perKey: 5, perWindow: 60, windowMs: 60_000 });
    this.limitLog = new LogThrottle(deps.log, { perKey: 1, perWindow: 20, windowMs: 60_000 });
    this.refusalLog = new LogThrottle(deps.log, { perKey: 5, perWindow: 60, windowMs: 60_000 });
  }

  /**
   * Authenticates a request by `header` (its Authorization header, or `Bearer <secret>` of the console's
   * cookie or sign-in); a failure's answer may be held back (see the class).
   */
  async check(req: IncomingMessage, header: string | undefined, route: Pick<Route, 'method' | 'path'>, fromCookie = false): Promise<Verdict> {
    let auth = authenticate(header, this.deps.repos, new Date(), fromCookie);
    const token = auth.ok ? auth.principal.token : undefined;
    if (auth.ok && token) {
      const held = this.deps.firstAdmin.stillHeld(token, auth.secretSha256);
      if (held !== 'held') auth = { ok: false, failure: held, credential: `token ${token.id}`, name: auth.principal.name };
    }
    if (auth.ok) return { ok: true, principal: auth.principal };
    const now = Date.now();
    const address = req.socket.remoteAddress ?? '?';
    // The credential is known by its hash only (a missing one is not a credential).
    const credential = header === undefined ? undefined : hashSecret(header);
    // Over a limit means that many failures before this one: the first `limit` are answered 401.
    const source = addressKey(address);
    const addressOver = this.addresses.over(source, now);
    const credentialOver = credential !== undefined && this.credentials.over(credential, now);
    this.addresses.fail(source, now);
    if (credential !== undefined) this.credentials.fail(credential, now);
    this.failures.inc({ reason: auth.failure });
    const fields = {
      reason: auth.failure,
      address,
      method: req.method,
      route: `${route.method} ${route.path}`,
      // tokenId or sessionId: the number of the credential, never its secret.
      ...(auth.credential ? { [CREDENTIAL_FIELD[auth.credential.split(' ')[0]!] ?? 'tokenId']: Number(auth.credential.split(' ')[1]) } : {}),
      ...(auth.name ? { user: auth.name } : {}),
    };
    this.failureLog.warn(address, fields, 'api authentication failed', 'api authentication failures not logged (too many)');
    if (!addressOver && !credentialOver) return { ok: false, code: 'UNAUTHENTICATED', message: `no valid token (${auth.failure})` };
    const scope = addressOver ? 'address' : 'credential';
    this.limited.inc({ scope });
    this.limitLog.warn(
      `${scope} ${scope === 'address' ? source : credential}`,
      { scope, address, reason: auth.failure },
      'api failed-authentication limit reached: failures are answered 429, late',
      'api failed-authentication limit: lines not logged (too many)',
    );
    const waitMs = Math.max(addressOver ? this.addresses.waitMs(source, now) : 0, credentialOver ? this.credentials.waitMs(credential, now) : 0);
    if (this.delayed < Math.min(MAX_DELAYED, Math.floor(this.deps.maxConnections / 4))) {
      this.delayed += 1;
      await new Promise((resolve) => setTimeout(resolve, FAILURE_DELAY_MS));
      this.delayed -= 1;
    }
    return {
      ok: false,
      code: 'TOO_MANY_FAILURES',
      message:
        `no valid token (${auth.failure}), and too many failed authentications from this ${scope === 'address' ? 'address' : 'token'}; ` +
        'a valid token is still served',
      retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)),
    };
  }

  /**
   * A principal refused a route (`why`: role, contractor rights or scope): counted, logged and audited
   * (AUDITED_REFUSALS_PER_MINUTE per user; the rest counted and logged only).
   */
  refused(req: IncomingMessage, route: Route, who: Principal, path: string, why: string): void {
    this.forbidden.inc({ permission: route.permission });
    const fields = {
      user: who.name,
      role: who.role,
      source: who.source,
      permission: route.permission,
      route: `${route.method} ${route.path}`,
      address: req.socket.remoteAddress,
      why,
    };
    this.refusalLog.warn(who.name, fields, 'api request refused: the user may not do this', 'api refusals not logged (too many)');
    const key = `user ${who.source} ${who.name}`;
    const unaudited = this.refusals.over(key);
    this.refusals.fail(key);
    if (unaudited) return;
    this.deps.repos.audit.add({
      actor: who.name,
      role: who.role,
      action: 'access.denied',
      target: `${route.method} ${route.path}`,
      outcome: 'refused',
      details: { permission: route.permission, path, why },
    });
  }
}
