import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import type { SessionWatch } from '../directory/sessionWatch.js';
import type { Repositories } from '../store/repositories.js';
import { hashSecret, newConsoleSecret, permissionsOf } from './auth.js';
import type { Verdict } from './authGuard.js';
import type { ConsoleCookies } from './consoleCookie.js';
import { describePrincipal, sessionPrincipal, type Principal } from './principal.js';
import { ApiError, type Route } from './router.js';
import { loginName, loginPassword, type LoginGate } from './sessionRoutes.js';

export interface ConsoleSessionDeps {
  gate: LoginGate;
  cookies: ConsoleCookies;
  /** The API's guard on a presented secret: counted, limited and logged as any other token (AuthGuard). */
  check: (req: IncomingMessage, secret: string) => Promise<Verdict>;
  watch: Pick<SessionWatch, 'end' | 'tell'>;
  repos: Pick<Repositories, 'audit' | 'consoleSessions'>;
  /** Runs a change durably (fsynced) before the answer leaves: a sign-in's row before its cookie. */
  durable: <T>(change: () => T) => T;
}

const signIn = z
  .strictObject({ username: loginName.optional(), password: loginPassword.optional(), token: z.string().max(256, 'at most 256 characters').optional() })
  .refine((b) => (b.token !== undefined) !== (b.username !== undefined || b.password !== undefined), {
    message: 'give either {token} (an API token) or {username, password} (a directory account)',
  })
  .refine((b) => b.token !== undefined || (b.username !== undefined && b.password !== undefined), { message: 'give both username and password' })
  .refine((b) => b.token !== '', { message: 'token: must not be empty' });

/** What the page is told of who is signed in: the principal, the permissions it holds (to show only controls it may use) and its CSRF token. */
const answer = (cookies: ConsoleCookies, secret: string, who: Principal) => ({
  csrfToken: cookies.csrfFor(secret),
  principal: describePrincipal(who),
  permissions: permissionsOf(who),
});

/**
 * Signing in to the web console: with a directory account (the same login,
 * limits and audit as POST /api/v1/session) or with an API token (checked
 * and limited by the API's guard, as a Bearer token). Either way the cookie
 * then holds a console session's own secret standing for that credential
 * (ConsoleCookies): the page's session ends at its sign-out, and whenever the
 * token or the directory session does.
 */
export function consoleSessionRoutes(deps: ConsoleSessionDeps): Route[] {
  const { cookies } = deps;
  /**
   * A console session for a credential (by its secret), committed with `also` (its audit entry) before its
   * cookie goes out; answers the cookie's secret.
   */
  const open = (req: IncomingMessage, res: ServerResponse, credential: string, expiresAt: Date | undefined, also: () => void = () => undefined) => {
    const secret = newConsoleSecret();
    const kind = credential.startsWith('eas_') ? 'session' : 'token';
    deps.durable(() => {
      deps.repos.consoleSessions.create(hashSecret(secret), hashSecret(credential), kind, expiresAt);
      also();
    });
    cookies.set(req, res, secret, expiresAt);
    return secret;
  };
  /** The secret the caller is authenticated by: the cookie, else the Bearer header. */
  const secretOf = (req: IncomingMessage) => cookies.secretOf(req) ?? /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
  return [
    {
      method: 'POST',
      path: '/api/v1/console/session',
      permission: 'anyone',
      summary:
        'sign in to the web console: body {username, password} (a directory account) or {token} (an API token); ' +
        'sets the HttpOnly cookie and answers {csrfToken, principal, permissions}',
      handle: async (ctx) => {
        const address = ctx.req.socket.remoteAddress ?? '?';
        let b: z.infer<typeof signIn>;
        try {
          b = await ctx.body(signIn);
        } catch (err) {
          deps.gate.badRequest(address, err);
          throw err;
        }
        if (b.token !== undefined) {
          const verdict = await deps.check(ctx.req, b.token);
          if (!verdict.ok) {
            if (verdict.retryAfterSeconds !== undefined) ctx.res.setHeader('retry-after', String(verdict.retryAfterSeconds));
            // Over the limit a guesser gets no keep-alive: each try costs a new connection, as on the rest of the API.
            if (verdict.code === 'TOO_MANY_FAILURES') ctx.res.setHeader('connection', 'close');
            throw new ApiError(verdict.code, verdict.message.replace('no valid token', 'that is not a valid API token'));
          }
          const who = verdict.principal;
          const secret = open(ctx.req, ctx.res, b.token, who.expiresAt, () =>
            deps.repos.audit.add({
              actor: who.name,
              role: who.role,
              action: 'console.signIn',
              target: 'console',
              outcome: 'done',
              details: { address, with: 'token', ...(who.token ? { token: who.token.id } : {}) },
            }),
          );
          return { body: answer(cookies, secret, who) };
        }
        // The directory session's own secret never leaves the agent: the cookie stands for it.
        const login = await deps.gate.login(ctx, b.username!, b.password!);
        const secret = open(ctx.req, ctx.res, login.secret, login.session.expiresAt);
        return { body: answer(cookies, secret, sessionPrincipal(login.session)) };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/console/session',
      permission: 'status.read',
      summary: 'who is signed in to the console: {csrfToken, principal, permissions}',
      handle: ({ req, user }) => ({ body: answer(cookies, secretOf(req), user) }),
    },
    {
      method: 'DELETE',
      path: '/api/v1/console/session',
      permission: 'status.read',
      summary: 'sign out of the console: ends its session and forgets the cookie, and ends a directory session (an API token stays valid)',
      handle: async (ctx) => {
        await ctx.noBody();
        const session = ctx.user.session;
        const secret = cookies.secretOf(ctx.req);
        // The console session and the directory session behind it end in one commit.
        const ended = ctx.commit(() => {
          if (secret) deps.repos.consoleSessions.end(hashSecret(secret));
          return session ? deps.watch.end(session, 'logout', 'logout') : false;
        });
        if (session && ended) deps.watch.tell([session.id], 'logout');
        cookies.clear(ctx.req, ctx.res);
        return { body: { ended: true, ...(session ? { session: session.id } : {}) } };
      },
    },
  ];
}
