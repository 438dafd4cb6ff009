import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import { PROFILE_NAMES, type ProfileName } from '../../certs/profiles/index.js';
import { REVOCATION_REASON_CODES, type CertificateStatus, type RevocationReason } from '../../certs/store.js';
import type { CaService } from '../ca/caService.js';
import type { Config } from '../config/schema.js';
import type { EventBus } from '../events.js';
import type { Repositories } from '../store/repositories.js';
import { SYNC_STATE } from '../sync/syncService.js';
import { readSyncStatus } from '../sync/syncStatus.js';
import { ApiError, paged, text, type Route } from './router.js';

export interface OperationRouteDeps {
  config: () => Config;
  repos: Pick<Repositories, 'sync' | 'certificates'>;
  ca: Pick<CaService, 'revoke'>;
  /** Tells the sync a request is waiting in sync_state (it would otherwise find it within sync.idleMs). */
  bus?: Pick<EventBus, 'emit'>;
}

const STATUSES: readonly CertificateStatus[] = ['valid', 'revoked', 'superseded'];
const REASONS = Object.keys(REVOCATION_REASON_CODES) as [RevocationReason, ...RevocationReason[]];

/** Certificates (list, show, revoke, CRL) and the upstream sync (status, now, reconcile, dead letters). */
export function operationRoutes(deps: OperationRouteDeps): Route[] {
  const sync = () => deps.repos.sync;
  const syncOn = () => {
    if (!deps.config().sync.enabled) throw new ApiError('SYNC_OFF', 'sync is off (sync.enabled: false)');
  };
  return [
    {
      method: 'GET',
      path: '/api/v1/certificates',
      permission: 'certificates.read',
      summary: 'issued certificates, soonest expiry first',
      query: {
        status: { kind: 'enum', values: STATUSES },
        profile: { kind: 'enum', values: PROFILE_NAMES },
        identity: { kind: 'text', max: 256, what: 'a device id or application URI' },
        ...paged(),
      },
      handle: ({ query }) => {
        const status = query.text('status') as CertificateStatus | undefined;
        const profile = query.text('profile') as ProfileName | undefined;
        const identity = query.text('identity');
        const limit = query.int('limit');
        const offset = query.int('offset');
        const all = deps.repos.certificates.list({
          ...(status ? { status } : {}),
          ...(profile ? { profile } : {}),
          ...(identity ? { identity } : {}),
          limit: 1_000_000,
        });
        return { body: { total: all.length, items: all.slice(offset, offset + limit).map(({ pem: _pem, ...r }) => r) } };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/certificates/crl',
      permission: 'certificates.read',
      summary: 'the CRL file the agent publishes (PEM), and how many certificates are revoked',
      handle: () => {
        const file = deps.config().ca.crlFile;
        const revoked = deps.repos.certificates.list({ status: 'revoked', limit: 1_000_000 }).length;
        return { body: { file, revoked, pem: existsSync(file) ? readFileSync(file, 'utf8') : null } };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/certificates/{serial}',
      permission: 'certificates.read',
      summary: 'one certificate with its PEM (never a private key: the CA keeps none of its subjects)',
      handle: ({ params }) => {
        const record = deps.repos.certificates.get(params.serial!.toLowerCase());
        if (!record) throw new ApiError('NO_SUCH_CERTIFICATE', `no certificate with serial ${params.serial}`);
        return { body: { certificate: record } };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/certificates/{serial}/revoke',
      permission: 'certificates.revoke',
      summary: `revoke; body {reason: ${REASONS.join('|')}}; keyCompromise revokes every certificate of the key; the CRL is published at once`,
      handle: async (ctx) => {
        const b = await ctx.body(z.strictObject({ reason: z.enum(REASONS), note: text(500).optional() }));
        const serial = ctx.params.serial!.toLowerCase();
        const record = deps.repos.certificates.get(serial);
        if (!record) throw new ApiError('NO_SUCH_CERTIFICATE', `no certificate with serial ${serial}`);
        if (record.status === 'revoked') throw new ApiError('ALREADY_REVOKED', `certificate ${serial} is already revoked`);
        // The audit entry is committed first (the revocation commits durably itself, then leaves the
        // process with the CRL); a revocation that fails is audited again as refused.
        const details = { reason: b.reason, identity: record.identity, ...(b.note ? { note: b.note } : {}) };
        ctx.commit(() => ctx.audit('certificate.revoke', serial, 'accepted', details));
        let all;
        try {
          all = deps.ca.revoke(serial, b.reason);
        } catch (err) {
          ctx.commit(() => ctx.audit('certificate.revoke', serial, 'refused', { ...details, error: (err as Error).message }));
          throw err;
        }
        return { body: { revoked: all.map(({ pem: _pem, ...r }) => r) } };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/sync/status',
      permission: 'sync.read',
      summary: 'connected or not, last success and error, backlog, dead letters, next attempt',
      handle: () => ({ body: readSyncStatus(sync(), deps.config()) }),
    },
    ...(
      [
        ['now', SYNC_STATE.requestNow, 'send what waits now, ending any backoff or Retry-After wait, and resume a sync paused on a refused token', 'sync.now'],
        ['reconcile', SYNC_STATE.requestReconcile, 'compare with the receiver and queue what it lacks', 'sync.reconcile'],
      ] as const
    ).map(
      ([what, key, summary, permission]): Route => ({
        method: 'POST',
        path: `/api/v1/sync/${what}`,
        permission,
        summary,
        handle: async (ctx) => {
          await ctx.noBody();
          syncOn();
          ctx.commit(() => {
            sync().setState(key, new Date().toISOString());
            ctx.audit(`sync.${what}`, 'sync', 'accepted');
          });
          // Committed first: the sync reads the request from sync_state, and ends its waits at once.
          deps.bus?.emit('sync.requested', { what });
          return { status: 202, body: { requested: what } };
        },
      }),
    ),
    {
      method: 'GET',
      path: '/api/v1/sync/dead-letters',
      permission: 'sync.deadLetters.read',
      summary: 'items the receiver refused, with its reason, oldest first',
      query: paged(1_000, 10_000),
      handle: ({ query }) => {
        const offset = query.int('offset');
        const repo = sync();
        // Dead letters are few (each is a device the receiver refused): the page is cut here.
        return { body: { total: repo.deadLetterCount(), items: repo.deadLetters(offset + query.int('limit')).slice(offset) } };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/sync/dead-letters/retry',
      permission: 'sync.deadLetters.retry',
      summary: "put every dead letter back into the outbox, at its device's current revision, and every refused event back in the queue",
      handle: async (ctx) => {
        await ctx.noBody();
        const body = ctx.commit(() => {
          const requeued = sync().retryDeadLetters();
          // Refused events (report findings) go back in their place in the queue too; named only when there were some.
          const events = sync().events.retryRefused();
          ctx.audit('sync.retryDeadLetters', 'sync', 'done', { requeued, ...(events > 0 ? { events } : {}) });
          return { requeued, ...(events > 0 ? { events } : {}) };
        });
        return { body };
      },
    },
  ];
}
