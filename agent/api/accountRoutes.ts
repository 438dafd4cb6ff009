import { z } from 'zod';
import type { Repositories } from '../store/repositories.js';
import { ROLES, type Role } from '../store/userRepository.js';
import type { Config } from '../config/schema.js';
import { FIRST_ADMIN_TOKEN_LABEL, hashSecret, newTokenSecret, PERMISSIONS, type Permission } from './auth.js';
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

/** Who am I; users and tokens (administrators); the audit log. */
export function accountRoutes(deps: { repos: Pick<Repositories, 'users' | 'audit'>; config: () => Config }): Route[] {
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
      summary: 'the caller: user, role, what the role may do, and the latest 50 changes the caller made',
      handle: ({ user }) => ({
        body: {
          user,
          permissions: (Object.keys(PERMISSIONS) as Permission[]).filter((p) => (PERMISSIONS[p] as readonly Role[]).includes(user.role)),
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
      summary: 'every user with its role and whether it is disabled, by name',
      query: paged(),
      handle: ({ query }) => ({ body: page(users().list(), query) }),
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
        const user = ctx.commit(() => {
          if (users().byName(b.name)) throw new ApiError('USER_EXISTS', `user ${b.name} exists`);
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
      summary: 'disable a user: its tokens stop working (an administrator cannot disable their own account)',
      handle: async (ctx) => {
        await ctx.noBody();
        const target = userOf(ctx.params.name!);
        if (target.id === ctx.user.id) throw new ApiError('SELF', 'you cannot disable your own account; another administrator can');
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
