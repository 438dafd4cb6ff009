import { z } from 'zod';
import type { Store } from '../store/database.js';
import { EnrollmentRepository } from '../store/enrollmentRepository.js';
import { text, type Route } from './router.js';

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

/** Enrollment tokens, which devices present to be enrolled without a technician (docs/mqtt-provisioning.md). */
export function enrollmentRoutes(deps: { store: () => Store }): Route[] {
  return [
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
          const created = new EnrollmentRepository(deps.store()).createToken(label, uses, expiresAt);
          ctx.audit('enrollmentToken.create', `enrollment token ${created.record.id}`, 'done', { label, maxUses: uses, expiresAt: expiresAt.toISOString() });
          return created;
        });
        return { status: 201, body: made };
      },
    },
  ];
}
