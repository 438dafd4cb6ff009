import { z } from 'zod';
import type { Repositories } from '../store/repositories.js';
import { ROLES, type Role } from '../store/userRepository.js';
import type { Config } from '../config/schema.js';
import type { SessionWatch } from '../directory/sessionWatch.js';
import { FIRST_ADMIN_TOKEN_LABEL, hashSecret, newTokenSecret, permissionsOf } from './auth.js';
import { describePrincipal, type Principal } from './principal.js';
import { removeAdminTokenFile, supersedeFirstAdminToken } from './firstAdmin.js';
import { ApiError, paged, text, type Query, type Route } from './router.js';

/** A user name: 1 to 64 of A-Z a-z 0-9 . _ @ - (the CLI takes the same). */
export const USER_NAME = /^[A-Za-z0-9._@-]{1,64}$/;
/** A token lives at most this long; without an expiry it lives until revoked. */
const MAX_TOKEN_SECONDS = 3_650 * 86_400;

/** A page of a list held in memory (users and tokens of one gateway are few). */
const page = <T>(all: T[], query: Query): { total: number; items: T[] } => {
  const offset = query.int('offset');
  return { total: all.length, items: all.slice(offset, offset + query.int('limit')) };
};

/**
 * The local administrators are the way in when the directory is not (the break-glass accounts): only a local
 * administrator makes one, gives one a token or disables one. A directory administrator's power ends with
 * their AD account; a local admin they made, or a local admin they cut off, would outlast it.
 */
function localAdminsOnly(who: Principal, what: string): void {
  if (who.source !== 'local')
    throw new ApiError('FORBIDDEN', `only a local administrator may ${what}: the local administrators are the way in when the directory is not`);
}

/** Who am I; users and tokens (administrators); the audit log. */
export function accountRoutes(deps: {
  repos: Pick<Repositories, 'users' | 'audit' | 'sessions'>;
  config: () => Config;
  watch: Pick<SessionWatch, 'end' | 'tell'>;
}): Route[] {
  const users = () => deps.repos.users;
  const audit = () => deps.repos.audit;
  const userOf = (name: string) => {
    const user = users().byName(name);
    if (!user) throw new ApiError('NO_SUCH_USER', `no user ${name}`);
    return user;
  };
  return [
    {
      method: 'GET',
      path: '/api/v1/me',
      permission: 'status.read',
      summary: 'the caller: name, role, source (local or directory), scope, expiry, what they may do, and the latest 50 changes they made',
      handle: ({ user }) => ({
        body: {
          user: describePrincipal(user),
          permissions: permissionsOf(user),
          recent: audit().list({ actor: user.name, limit: 50, offset: 0 }).items,
        },
      }),
    },
    {
      method: 'GET',
      path: '/api/v1/audit',
      permission: 'audit.read',
      summary: 'every change made through the API, and every refusal of an authenticated user, newest first',
      query: { actor: { kind: 'text', max: 128, what: 'a user name or `local:<login>`' }, ...paged() },
      handle: ({ query }) => {
        const actor = query.text('actor');
        return { body: audit().list({ ...(actor ? { actor } : {}), limit: query.int('limit'), offset: query.int('offset') }) };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/users',
      permission: 'users.manage',
      summary: 'every user, local and from the directory (source), with its role and whether it is disabled, by name',
      query: paged(),
      handle: ({ query }) => {
        const local = users()
          .list()
          .map((u) => ({ ...u, source: 'local' as const }));
        const directory = deps.repos.sessions.users().map((u) => ({
          name: u.name,
          role: u.role ?? null,
          source: 'directory' as const,
          ...(u.grant ? u.grant : {}),
          ...(u.disabledAt ? { disabledAt: u.disabledAt } : {}),
          createdAt: u.firstLoginAt,
          lastLoginAt: u.lastLoginAt,
          dn: u.dn,
        }));
        return {
          body: page(
            [...local, ...directory].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
            query,
          ),
        };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/users',
      permission: 'users.manage',
      summary: 'add a user: body {name, role: admin|technician|viewer}',
      handle: async (ctx) => {
        const b = await ctx.body(
          z.strictObject({ name: z.string().regex(USER_NAME, '1 to 64 of A-Z a-z 0-9 . _ @ -'), role: z.enum(ROLES as [Role, ...Role[]]) }),
        );
        if (b.role === 'admin') localAdminsOnly(ctx.user, 'make a local administrator');
        const user = ctx.commit(() => {
          if (users().byName(b.name)) throw new ApiError('USER_EXISTS', `user ${b.name} exists`);
          const directory = deps.repos.sessions.userByName(b.name);
          if (directory) throw new ApiError('USER_EXISTS', `${directory.name} is a directory user: a local user cannot take their name`);
          const made = users().add(b.name, b.role, ctx.user.name);
          ctx.audit('user.add', b.name, 'done', { role: b.role });
          return made;
        });
        return { status: 201, body: { user } };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/users/{name}/disable',
      permission: 'users.manage',
      summary:
        'disable a user: its tokens stop working; a directory user is refused on this gateway whatever the directory says, ' +
        'and their sessions end at once (an administrator cannot disable their own account)',
      handle: async (ctx) => {
        await ctx.noBody();
        const person = deps.repos.sessions.userByName(ctx.params.name!);
        if (person && !users().byName(ctx.params.name!)) {
          if (ctx.user.source === 'directory' && ctx.user.name.toLowerCase() === person.name.toLowerCase())
            throw new ApiError('SELF', 'you cannot disable your own account; another administrator can');
          const ended = ctx.commit(() => {
            deps.repos.sessions.disableUser(person.id, new Date());
            ctx.audit('user.disable', person.name, 'done', { source: 'directory' });
            return deps.repos.sessions
              .live()
              .filter((s) => s.userId === person.id && deps.watch.end(s, 'disabled-here', `disabled on this gateway by ${ctx.user.name}`))
              .map((s) => s.id);
          });
          deps.watch.tell(ended, 'disabled-here');
          const after = deps.repos.sessions.user(person.id)!;
          return {
            body: { user: { name: after.name, role: after.role ?? null, source: 'directory', disabledAt: after.disabledAt, sessionsEnded: ended.length } },
          };
        }
        const target = userOf(ctx.params.name!);
        if (target.id === ctx.user.user?.id) throw new ApiError('SELF', 'you cannot disable your own account; another administrator can');
        if (target.role === 'admin') localAdminsOnly(ctx.user, 'disable a local administrator');
        ctx.commit(() => {
          users().disable(target.id);
          ctx.audit('user.disable', target.name, 'done');
        });
        return { body: { user: users().get(target.id) } };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/tokens',
      permission: 'users.manage',
      summary: 'every token with its user, label, expiry and revocation (never a secret)',
      query: { user: { kind: 'text', max: 64, what: 'a user name' }, ...paged() },
      handle: ({ query }) => {
        const name = query.text('user');
        return { body: page(users().tokens(name ? userOf(name).id : undefined), query) };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/tokens',
      permission: 'users.manage',
      summary:
        'make a token: body {user, label?, expiresInSeconds?}; the answer holds the secret, shown this once; ' +
        "an administrator's token ends the first-start token",
      handle: async (ctx) => {
        const b = await ctx.body(
          z.strictObject({
            user: z.string().regex(USER_NAME),
            label: text(128)
              .min(1)
              .refine((l) => l !== FIRST_ADMIN_TOKEN_LABEL, `"${FIRST_ADMIN_TOKEN_LABEL}" is kept for the token the agent makes at its first start`)
              .optional(),
            expiresInSeconds: z.number().int().min(60).max(MAX_TOKEN_SECONDS).optional(),
          }),
        );
        const owner = userOf(b.user);
        if (owner.role === 'admin') localAdminsOnly(ctx.user, "make a local administrator's token");
        if (owner.disabledAt) throw new ApiError('USER_DISABLED', `user ${owner.name} is disabled`);
        const secret = newTokenSecret();
        const expiresAt = b.expiresInSeconds ? new Date(Date.now() + b.expiresInSeconds * 1000) : undefined;
        const { token, superseded } = ctx.commit(() => {
          const made = users().addToken(owner.id, hashSecret(secret), b.label ?? 'api', expiresAt);
          ctx.audit('token.create', `token ${made.id}`, 'done', {
            user: owner.name,
            label: made.label,
            ...(expiresAt ? { expiresAt: expiresAt.toISOString() } : {}),
          });
          // An administrator's own token that outlives the first-start one is its end (docs/operations.md).
          const ended = owner.role === 'admin' ? supersedeFirstAdminToken(users(), expiresAt) : [];
          for (const id of ended)
            ctx.audit('token.revoke', `token ${id}`, 'done', { user: 'admin', reason: `first-start token, superseded by token ${made.id}` });
          return { token: made, superseded: ended };
        });
        if (superseded.length > 0) removeAdminTokenFile(deps.config().agent.dataDir);
        return { status: 201, body: { token, secret, ...(superseded.length > 0 ? { firstStartTokenRevoked: true } : {}) } };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/tokens/{id}/revoke',
      permission: 'users.manage',
      summary: 'revoke a token at once',
      handle: async (ctx) => {
        await ctx.noBody();
        const token = /^\d{1,15}$/.test(ctx.params.id!) ? users().token(Number(ctx.params.id)) : undefined;
        if (!token) throw new ApiError('NO_SUCH_TOKEN', `no token ${ctx.params.id}`);
        ctx.commit(() => {
          users().revokeToken(token.id);
          ctx.audit('token.revoke', `token ${token.id}`, 'done', { user: users().get(token.userId)?.name });
        });
        return { body: { token: users().token(token.id) } };
      },
    },
  ];
}
