import type { ServerResponse } from 'node:http';
import { z } from 'zod';
import type { Config } from '../config/schema.js';
import { parseRange, targetRefusal } from '../transport/ranges.js';
import type { AgentEvents, EventBus } from '../events.js';
import type { DiscoveryRun, DiscoveryRunRepository, DiscoveryTarget } from '../store/discoveryRunRepository.js';
import type { Repositories } from '../store/repositories.js';
import { inScope, type Principal } from './principal.js';
import { ApiError, paged, type Route } from './router.js';

export interface DiscoveryRouteDeps {
  config: () => Config;
  repos: Pick<Repositories, 'discoveryRuns' | 'devices'>;
  bus: EventBus;
}

const start = z.strictObject({
  protocols: z
    .array(z.enum(['opcua', 'mqtt']))
    .min(1)
    .max(2)
    .optional(),
  /** OPC UA only: opc.tcp:// URLs and IPv4 ranges, inside opcua.scan.ranges or configured endpoints. */
  targets: z.array(z.string().min(1).max(200)).max(64).optional(),
});

const ENDED = new Set(['done', 'failed']);
/** A comment line on a quiet stream keeps proxies and clients from closing it. */
const KEEPALIVE_MS = 15_000;
/** How often a followed run is read again: a run cancelled before it started ends without a progress event. */
const RECHECK_MS = 500;

/** Streams open at once, at most: each reads the database twice a second. */
const MAX_STREAMS = 64;
/** A stream ends after this long even if its run has not (a run waiting for a protocol switched off since). */
const MAX_STREAM_MS = 3_600_000;

let streams = 0;
let open = 0;

export function discoveryRoutes(deps: DiscoveryRouteDeps): Route[] {
  const runs = () => deps.repos.discoveryRuns;
  /**
   * A run's targets as the caller may see them: for a scoped user, a device found at an address of their
   * ranges but placed in another part of the plant is not named.
   */
  const targetsOf = (id: number, who: Principal): DiscoveryTarget[] => {
    const all = runs().targets(id);
    if (!who.scope) return all;
    const gateway = deps.config().sync.location;
    return all.map(({ deviceId, ...t }) => {
      const device = deviceId ? deps.repos.devices.get(deviceId) : undefined;
      return device && inScope(who.scope, device.location, gateway) ? { ...t, deviceId: deviceId! } : t;
    });
  };
  /** The run, if it exists and the caller may see it: a scoped user sees only the runs they started. */
  const runOf = (id: string, who: Principal): DiscoveryRun => {
    const run = /^\d{1,15}$/.test(id) ? runs().get(Number(id)) : undefined;
    if (!run || (who.scope && run.actor !== who.name)) throw new ApiError('NO_SUCH_RUN', `no discovery run ${id}`);
    return run;
  };
  return [
    {
      method: 'POST',
      path: '/api/v1/discovery/runs',
      permission: 'discovery.run',
      summary: 'start a discovery: body {protocols?: ["opcua","mqtt"] (every enabled one), targets?: OPC UA URLs and IPv4 ranges}; one run per protocol',
      handle: async (ctx) => {
        const b = await ctx.body(start);
        const c = deps.config();
        const scoped = ctx.user.scope !== undefined;
        const enabled = (['opcua', 'mqtt'] as const).filter((p) => c[p].enabled && (!scoped || p === 'opcua'));
        const protocols = [...new Set(b.protocols ?? enabled)];
        if (scoped) {
          // A scoped user's run covers their ranges only: MQTT discovery listens to the whole plant's broker.
          if (protocols.includes('mqtt'))
            throw new ApiError('TARGET_NOT_ALLOWED', 'your access is scoped to part of the plant: MQTT discovery covers the whole plant');
          const mine = (ctx.user.ranges ?? []).map(parseRange);
          if (mine.length === 0)
            throw new ApiError('TARGET_NOT_ALLOWED', 'your access is scoped to part of the plant, and your group mapping gives you no discovery ranges');
          if (!b.targets?.length)
            throw new ApiError('TARGET_NOT_ALLOWED', `your access is scoped: give targets inside your ranges (${ctx.user.ranges!.join(', ')})`);
          const outside = b.targets.map((t) => targetRefusal(t, mine, [], c.opcua.scan.ports)).filter((r): r is string => r !== undefined);
          if (outside.length > 0) throw new ApiError('TARGET_NOT_ALLOWED', `${outside.join('; ')} (your ranges: ${ctx.user.ranges!.join(', ')})`);
        }
        for (const p of protocols) if (!c[p].enabled) throw new ApiError('PROTOCOL_OFF', `${p} discovery is off (${p}.enabled: false)`);
        if (protocols.length === 0) throw new ApiError('PROTOCOL_OFF', 'OPC UA and MQTT are both off in the configuration: nothing to discover');
        const targets = b.targets ?? [];
        if (targets.length > 0 && !protocols.includes('opcua')) throw new ApiError('BAD_REQUEST', 'targets: only an OPC UA run takes targets');
        const allowed = c.opcua.scan.ranges.map(parseRange);
        const refused = targets.map((t) => targetRefusal(t, allowed, c.opcua.endpoints, c.opcua.scan.ports)).filter((r): r is string => r !== undefined);
        // A scoped user is not told the plant's ranges.
        if (refused.length > 0 && scoped)
          throw new ApiError('TARGET_NOT_ALLOWED', 'a target of your ranges lies outside what the gateway may scan (opcua.scan.ranges): ask an administrator');
        if (refused.length > 0)
          throw new ApiError(
            'TARGET_NOT_ALLOWED',
            `${refused.join('; ')}. Targets narrow a run to what the configuration allows; an administrator widens opcua.scan.ranges`,
          );
        const repo = runs();
        const made = ctx.commit(() =>
          protocols.map((p) => {
            const run = repo.request(p, 'technician', ctx.user.name, p === 'opcua' && targets.length > 0 ? { targets } : undefined);
            ctx.audit('discovery.start', `run ${run.id}`, 'accepted', { protocol: p, ...(p === 'opcua' && targets.length > 0 ? { targets } : {}) });
            return run;
          }),
        );
        return { status: 202, body: { runs: made } };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/discovery/runs',
      permission: 'discovery.read',
      summary: 'discovery runs, newest first',
      query: paged(20),
      handle: ({ query, user }) => ({ body: runs().page(query.int('limit'), query.int('offset'), user.scope ? user.name : undefined) }),
    },
    {
      method: 'GET',
      path: '/api/v1/discovery/runs/{id}',
      permission: 'discovery.read',
      summary: 'one run with every target and its outcome',
      handle: ({ params, user }) => {
        const run = runOf(params.id!, user);
        return { body: { run, targets: targetsOf(run.id, user) } };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/discovery/runs/{id}/events',
      permission: 'discovery.read',
      summary: 'Server-Sent Events: `run` (the run now), `progress` (each step), `end` (the run and its targets); then the stream closes',
      handle: ({ params, res, user }) => {
        const run = runOf(params.id!, user);
        if (open >= MAX_STREAMS)
          throw new ApiError('TOO_MANY_STREAMS', `${MAX_STREAMS} progress streams are open; close one or poll GET /api/v1/discovery/runs/{id}`);
        follow(run.id, res, runs, deps.bus, user.session?.id, (id) => targetsOf(id, user));
        return undefined;
      },
    },
    {
      method: 'POST',
      path: '/api/v1/discovery/runs/{id}/cancel',
      permission: 'discovery.run',
      summary: 'cancel a run: a waiting one ends at once, a running one starts no new target',
      handle: async (ctx) => {
        await ctx.noBody();
        const run = runOf(ctx.params.id!, ctx.user);
        const done = ctx.commit(() => {
          const cancelled = runs().cancel(run.id, ctx.user.name);
          ctx.audit('discovery.cancel', `run ${run.id}`, cancelled ? 'accepted' : 'refused', cancelled ? undefined : { status: run.status });
          return cancelled;
        });
        if (!done) throw new ApiError('RUN_ENDED', `run ${run.id} has already ended (${run.status})`);
        return { status: 202, body: { run: runs().get(run.id) } };
      },
    },
  ];
}

/** Streams a run's progress until it ends, the client goes, or the caller's directory session ends (logout, de-provisioned). */
function follow(
  id: number,
  res: ServerResponse,
  runs: () => DiscoveryRunRepository,
  bus: EventBus,
  sessionId: number | undefined,
  targetsOf: (id: number) => DiscoveryTarget[],
): void {
  const owner = `sse-${++streams}`;
  let seq = 0;
  let ended = false;
  const send = (event: string, data: unknown) => res.write(`id: ${++seq}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  const end = () => {
    if (ended) return;
    ended = true;
    const run = runs().get(id);
    send('end', { run, targets: targetsOf(id) });
    cleanup();
    res.end();
  };
  const check = () => {
    const run = runs().get(id);
    if (!run || ENDED.has(run.status)) end();
  };
  open += 1;
  const keepalive = setInterval(() => res.write(': keepalive\n\n'), KEEPALIVE_MS);
  const recheck = setInterval(check, RECHECK_MS);
  const expire = setTimeout(() => {
    cleanup();
    res.end();
  }, MAX_STREAM_MS);
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    open -= 1;
    clearInterval(keepalive);
    clearInterval(recheck);
    clearTimeout(expire);
    bus.off(owner);
  };
  res.on('close', () => {
    ended = true;
    cleanup();
  });
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
  if (sessionId !== undefined) {
    const revoke = (sessionIds: number[], reason: string) => {
      if (!sessionIds.includes(sessionId) || ended) return;
      ended = true;
      send('revoked', { reason });
      cleanup();
      res.end();
    };
    bus.on('session.ended', owner, ({ sessionIds, reason }) => revoke(sessionIds, reason));
    bus.on('session.changed', owner, ({ sessionIds }) => revoke(sessionIds, 'the directory changed your role or scope: open the stream again'));
  }
  // Listen before the first read, so that no step between the two is missed.
  bus.on('discovery.progress', owner, (p: AgentEvents['discovery.progress']) => {
    if (p.runId !== id || ended) return;
    send('progress', p);
    if (p.phase === 'done' || p.phase === 'failed' || p.phase === 'cancelled') end();
  });
  send('run', runs().get(id));
  check();
}
