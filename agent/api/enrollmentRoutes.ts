import { z } from 'zod';
import type { Repositories } from '../store/repositories.js';
import { ApiError, paged, text, type Route } from './router.js';

/** An enrollment token lives at most this long. */
export const MAX_ENROLLMENT_TOKEN_SECONDS = 366 * 86_400;
/** And serves this many devices at most. */
export const MAX_ENROLLMENT_TOKEN_USES = 1_000_000;

/** What a new enrollment token is, when the request does not say. */
export const ENROLLMENT_TOKEN_DEFAULTS = { label: 'enrollment token', uses: 1, expiresInSeconds: 86_400 } as const;

const body = z.strictObject({
  label: text(128).min(1).optional(),
  uses: z.number().int().min(1).max(MAX_ENROLLMENT_TOKEN_USES).optional(),
  expiresInSeconds: z.number().int().min(60).max(MAX_ENROLLMENT_TOKEN_SECONDS).optional(),
});

/**
 * Enrollment tokens, which devices present to be enrolled without a
 * technician (docs/mqtt-provisioning.md): made, listed and revoked by those
 * who may make them, every change audited. No answer but the one that makes
 * a token holds its secret; none holds its hash.
 */
export function enrollmentRoutes(deps: { repos: Pick<Repositories, 'enrollments'> }): Route[] {
  const tokens = () => deps.repos.enrollments;
  return [
    {
      method: 'GET',
      path: '/api/v1/enrollment-tokens',
      permission: 'devices.enroll',
      summary: 'enrollment tokens with their label, uses, expiry and revocation, oldest first (never the secret)',
      query: paged(),
      handle: ({ query }) => {
        // Tokens of one gateway are few: the page is cut here.
        const all = tokens().tokens();
        const offset = query.int('offset');
        return { body: { total: all.length, items: all.slice(offset, offset + query.int('limit')) } };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/enrollment-tokens',
      permission: 'devices.enroll',
      summary: 'make an enrollment token: body {label?, uses?, expiresInSeconds?}; the answer holds the secret, shown this once',
      handle: async (ctx) => {
        const b = await ctx.body(body);
        const label = b.label ?? ENROLLMENT_TOKEN_DEFAULTS.label;
        const uses = b.uses ?? ENROLLMENT_TOKEN_DEFAULTS.uses;
        const expiresAt = new Date(Date.now() + (b.expiresInSeconds ?? ENROLLMENT_TOKEN_DEFAULTS.expiresInSeconds) * 1000);
        const made = ctx.commit(() => {
          const created = tokens().createToken(label, uses, expiresAt);
          ctx.audit('enrollmentToken.create', `enrollment token ${created.record.id}`, 'done', { label, maxUses: uses, expiresAt: expiresAt.toISOString() });
          return created;
        });
        return { status: 201, body: made };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/enrollment-tokens/{id}/revoke',
      permission: 'devices.enroll',
      summary: 'revoke an enrollment token at once: no device enrolls with it any more',
      handle: async (ctx) => {
        await ctx.noBody();
        const id = ctx.params.id!;
        const token = ctx.commit(() => {
          const repo = tokens();
          const found = repo.token(id);
          if (!found) throw new ApiError('NO_SUCH_ENROLLMENT_TOKEN', `no enrollment token ${id}`);
          if (!repo.revokeToken(id)) throw new ApiError('ALREADY_REVOKED', `enrollment token ${id} is already revoked`);
          ctx.audit('enrollmentToken.revoke', `enrollment token ${id}`, 'done', { label: found.label, uses: found.uses, maxUses: found.maxUses });
          return repo.token(id)!;
        });
        return { body: { token } };
      },
    },
  ];
}
