import type { ServerResponse } from 'node:http';
import { z } from 'zod';
import type { Config } from '../config/schema.js';
import { LOCATION_FIELDS } from '../inventory/device.js';
import { defaultRevocationReason, isRevocationReason, REVOCATION_REASONS, type DeviceActionKind } from '../store/actionRepository.js';
import type { RevocationReason } from '../../certs/store.js';
import type { AgentEvents, EventBus } from '../events.js';
import type { Store } from '../store/database.js';
import { deviceDetails } from '../store/deviceDetails.js';
import { devicePageJson } from '../store/deviceQuery.js';
import type { Repositories } from '../store/repositories.js';
import { DEVICE_QUERY, deviceSelection } from './consoleRoutes.js';
import { permitted } from './auth.js';
import { inScope, type Principal } from './principal.js';
import { ApiError, paged, text, type Route } from './router.js';

export interface DeviceRouteDeps {
  config: () => Config;
  repos: Pick<Repositories, 'devices' | 'enrollments' | 'pushes' | 'actions' | 'sync' | 'configs'>;
  /** The list reads its pages through the store's prepared statements (devicePageJson). */
  store: Pick<Store, 'statement'>;
  /** Where committed decisions and changes are told (action.queued, device.changed) and outcomes heard (action.done). */
  bus: Pick<EventBus, 'emit' | 'on' | 'off'>;
}

let waiters = 0;

/**
 * Tells the daemon's workers that a decision is queued (after its commit)
 * and waits for its action.done, until `deadline` or until the client goes
 * away. The listener is in place before the workers are told, so an outcome
 * that comes at once is not missed; the caller then reads the table, the
 * source of truth.
 */
function tellAndWait(bus: DeviceRouteDeps['bus'], told: AgentEvents['action.queued'], deadline: number, res: ServerResponse): Promise<void> {
  const owner = `api:decision:${told.actionId}:${++waiters}`;
  return new Promise<void>((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      res.off('close', finish);
      bus.off(owner);
      resolve();
    };
    const timer = setTimeout(finish, Math.max(deadline - Date.now(), 0));
    res.once('close', finish);
    bus.on('action.done', owner, (done) => {
      if (done.actionId === told.actionId) finish();
    });
    bus.emit('action.queued', told);
  });
}

const decision = z.strictObject({
  reason: text(500).optional(),
  /** approve: the enrollment request to approve, when several wait with different keys. */
  request: z
    .string()
    .regex(/^[A-Za-z0-9._:-]{1,128}$/, 'a request id (devices show lists them)')
    .optional(),
  /** Seconds to wait for the daemon to carry the decision out (0: answer at once with 202). */
  wait: z.number().int().min(0).max(60).optional(),
});

const retires = (kind: DeviceActionKind) => kind === 'revoke' || kind === 'decommission';

/** revoke and decommission: the reason goes into the CRL, so it is one the CRL can carry; a free-text note goes beside it. */
const retirement = z.strictObject({
  reason: z
    .string()
    .refine(isRevocationReason, { message: `must be one of ${REVOCATION_REASONS.join(', ')} (it goes into the CRL; put free text in note)` })
    .optional(),
  note: text(500).optional(),
  wait: z.number().int().min(0).max(60).optional(),
});

const field = text(128).refine((v) => v.trim() === v, 'must not start or end with spaces');
const annotation = z
  .strictObject({
    assetTag: field.nullable().optional(),
    location: z
      .strictObject(
        Object.fromEntries(LOCATION_FIELDS.map((f) => [f, field.nullable().optional()])) as Record<
          (typeof LOCATION_FIELDS)[number],
          z.ZodOptional<z.ZodNullable<typeof field>>
        >,
      )
      .nullable()
      .optional(),
  })
  .refine((v) => v.assetTag !== undefined || v.location !== undefined, 'give assetTag, location or both');

/** What a decision needs: approve and reject are a technician's; revoke and decommission withdraw a certificate (administrators). */
const DECISIONS: [DeviceActionKind, 'devices.decide' | 'devices.retire', string][] = [
  ['approve', 'devices.decide', "approve the request waiting, or the device's next one"],
  ['reject', 'devices.decide', 'reject the requests waiting; later ones wait for a technician'],
  ['revoke', 'devices.retire', 'revoke the device certificate and cut the device off'],
  ['decommission', 'devices.retire', 'retire the device for good'],
];

export function deviceRoutes(deps: DeviceRouteDeps): Route[] {
  const gateway = () => deps.config().sync.location;
  /** The device, if it exists and lies inside the caller's scope: a device outside it is answered as one that does not exist. */
  const device = (id: string, who: Principal) => {
    const found = deps.repos.devices.get(id);
    if (!found || !inScope(who.scope, found.location, gateway())) throw new ApiError('NO_SUCH_DEVICE', `no device ${id}`);
    return found;
  };
  return [
    {
      method: 'GET',
      path: '/api/v1/devices',
      permission: 'devices.read',
      summary: 'the inventory: filtered by state, protocol, site, area or line, searched (q), sorted, paged',
      query: { ...DEVICE_QUERY, ...paged() },
      handle: ({ query, user }) => {
        const { filter, order } = deviceSelection(query, user, gateway());
        // Written to JSON straight from the rows: the same text as JSON.stringify(devices.page(...)), at a fraction of its cost.
        return { json: devicePageJson(deps.store, filter, query.int('limit'), query.int('offset'), order) };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/devices/{id}',
      permission: 'devices.read',
      summary: 'one device: its record, requests waiting, push status and history',
      handle: ({ params, user }) => {
        device(params.id!, user);
        const details = deviceDetails(deps.repos, params.id!);
        if (!details) throw new ApiError('NO_SUCH_DEVICE', `no device ${params.id!}`);
        // The receiver's reason for refusing a record is a dead letter's (sync.deadLetters.read): others are told the state only.
        const sync = !deps.config().sync.enabled ? { state: 'off' } : permitted(user, 'sync.deadLetters.read') ? details.sync : { state: details.sync.state };
        return { body: { ...details, sync } };
      },
    },
    ...DECISIONS.map(
      ([kind, permission, summary]): Route => ({
        method: 'POST',
        path: `/api/v1/devices/{id}/${kind}`,
        permission,
        summary: retires(kind)
          ? `${summary}; body {reason?: ${REVOCATION_REASONS.join('|')} (${defaultRevocationReason(kind)}), note?, wait?: seconds 0..60 (15)}`
          : `${summary}; body {reason?, ${kind === 'approve' ? 'request?, ' : ''}wait?: seconds 0..60 (15)}`,
        handle: async (ctx) => {
          const b: { reason?: string; note?: string; request?: string; wait?: number } = retires(kind) ? await ctx.body(retirement) : await ctx.body(decision);
          if (b.request !== undefined && kind !== 'approve') throw new ApiError('BAD_REQUEST', 'request: only an approval names a request');
          const { actions, devices } = deps.repos;
          const d = device(ctx.params.id!, ctx.user);
          // A revoke or decommission: `reason` is the CRL reason (checked by the schema), `note` the free text.
          const details = retires(kind)
            ? { reason: b.note ?? '', ...(b.reason ? { crlReason: b.reason as RevocationReason } : {}) }
            : { reason: b.reason ?? '', ...(b.request ? { requestId: b.request } : {}) };
          const queued = ctx.commit(() => {
            const action = actions.enqueue(d.id, kind, ctx.user.name, details);
            ctx.audit(`device.${kind}`, d.id, 'accepted', {
              action: action.id,
              ...(b.reason ? { reason: b.reason } : {}),
              ...(b.note ? { note: b.note } : {}),
              ...(b.request ? { request: b.request } : {}),
            });
            return action;
          });
          // The daemon's services carry decisions out in order per device (the same queue as the CLI's);
          // told after the commit, the protocol's worker starts at once, and its action.done ends the wait.
          const told = { actionId: queued.id, deviceId: d.id };
          const deadline = Date.now() + (b.wait ?? 15) * 1000;
          let action = queued;
          if (Date.now() < deadline && !ctx.res.destroyed) {
            await tellAndWait(deps.bus, told, deadline, ctx.res);
            action = actions.get(queued.id)!;
          } else {
            deps.bus.emit('action.queued', told);
          }
          if (action.outcome === 'refused') throw new ApiError('REFUSED', `${kind} refused: ${action.error ?? 'see the device history'}`);
          return { status: action.doneAt ? 200 : 202, body: { action, device: devices.get(d.id) } };
        },
      }),
    ),
    {
      method: 'PUT',
      path: '/api/v1/devices/{id}/annotation',
      permission: 'devices.annotate',
      summary: 'set the asset tag and location fields (site, area, line, cell; fields not given stay, null clears); sent upstream',
      handle: async (ctx) => {
        const b = await ctx.body(annotation);
        const { devices } = deps.repos;
        const updated = ctx.commit(() => {
          const d = device(ctx.params.id!, ctx.user);
          if (d.state === 'decommissioned') throw new ApiError('DECOMMISSIONED', `${d.id} is decommissioned: its record is final`);
          // Fields given are set (null or '' clears one); fields not given stay; location: null clears them all.
          const location =
            b.location === undefined
              ? undefined
              : b.location === null
                ? null
                : (Object.fromEntries(Object.entries({ ...d.location, ...b.location }).filter(([, v]) => v !== undefined && v !== null && v !== '')) as Record<
                    string,
                    string
                  >);
          if (location !== undefined && !inScope(ctx.user.scope, location ?? undefined, gateway()))
            throw new ApiError('FORBIDDEN', 'that location lies outside the part of the plant your access is scoped to');
          const changes = { ...(b.assetTag !== undefined ? { assetTag: b.assetTag } : {}), ...(location !== undefined ? { location } : {}) };
          const next = devices.apply({
            protocol: d.protocol,
            name: d.name,
            to: d.state,
            cause: `annotated: ${Object.keys(changes).join(' and ')}`,
            actor: ctx.user.name,
            details: changes,
            patch: changes,
            seen: false,
          });
          ctx.audit('device.annotate', d.id, 'done', changes);
          return next;
        });
        // Committed with its outbox row (trigger); the device repository told device.changed after the commit: the sync sends it now.
        return { body: { device: updated } };
      },
    },
  ];
}
