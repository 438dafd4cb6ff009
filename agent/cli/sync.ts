import type { Command } from 'commander';
import type { Config } from '../config/schema.js';
import { RefusedError } from '../errors.js';
import { daemonRunning } from '../lifecycle/instanceLock.js';
import type { Store } from '../store/database.js';
import type { AuditRepository } from '../store/auditRepository.js';
import type { DeadLetter, SyncRepository } from '../store/syncRepository.js';
import { SYNC_STATE } from '../sync/syncService.js';
import type { LastDivergence } from '../sync/syncState.js';
import { readSyncStatus, type SyncStatus } from '../sync/syncStatus.js';
import { apiOptions, runApi, type ApiOptions } from './apiCommand.js';
import { localAudit, readStore, withStore } from './common.js';

/** The sync tables, on the database opened for a change, or read-only for a read. */
function withSync<T>(config: Config, fn: (repo: SyncRepository, store: Store, audit: AuditRepository) => T, how: 'read' | 'change' = 'change'): Promise<T> {
  return (how === 'read' ? readStore : withStore)(config, (store, repos) => fn(repos.sync, store, repos.audit));
}

type Status = SyncStatus & { daemonRunning: boolean };
/** Dead letters queued again; `events`: refused events queued again, when there were some. */
type Retried = { requeued: number; events?: number };

function status(config: Config): Promise<Status> {
  return withSync(config, (repo) => ({ ...readSyncStatus(repo, config), daemonRunning: daemonRunning(config.agent.dataDir) }), 'read');
}

const statusText = (r: Status) =>
  [
    `sync ${r.enabled ? `to ${r.receiver}` : 'is off (sync.enabled: false)'}${r.daemonRunning ? '' : '; the daemon is not running'}`,
    `  ${r.paused ? `PAUSED: ${r.paused}` : r.connected ? 'connected' : 'not connected'}`,
    `  last success: ${r.lastSuccess ?? 'never'}`,
    r.lastError ? `  last error: ${r.lastError}` : '',
    r.nextAttemptAt ? `  next attempt: ${r.nextAttemptAt}` : '',
    `  backlog: ${r.backlog} device(s), ${r.batchesWaiting} batch(es) waiting`,
    r.stuck ? `  STUCK: ${r.stuck.batches} batch(es) not accepted since ${r.stuck.since} (sync.stuckAfterMs)` : '',
    `  dead letters: ${r.deadLetters}${r.deadLetters > 0 ? ' (edge-agent sync dead-letters; retry-dead-letters)' : ''}`,
    eventsText(r),
    r.lastReconcile ? `  last reconciliation: ${r.lastReconcile.at}, ${r.lastReconcile.queued} queued` : '',
    r.lastDivergence ? `  last divergence found: ${r.lastDivergence.at}, ${divergence(r.lastDivergence)}` : '',
  ]
    .filter((l) => l !== '')
    .map((l) => `${l}\n`)
    .join('');

/** The events (report findings): how many wait and are refused, and why they wait when the receiver says so. */
const eventsText = (r: Status) => {
  const e = r.events;
  return [
    `  events: ${e.waiting} waiting, ${e.refused} refused`,
    e.unknownRoute ? `\n  EVENTS WAIT: ${e.unknownRoute}` : '',
    e.lastError ? `\n  events' last error: ${e.lastError}` : '',
    e.lastRefused ? `\n  last refused event: ${e.lastRefused.eventId} (${e.lastRefused.type}, ${e.lastRefused.at}): ${e.lastRefused.error}` : '',
  ].join('');
};

const divergence = (d: LastDivergence) =>
  `${d.missing} missing at the receiver, ${d.behind} at an older revision, ${d.ahead} at a newer one (e.g. ${d.examples.join(', ')}); sent again`;

/** One dead letter: the HTTP status the receiver refused it with (200: a `rejected` result), and its answer. */
const deadLetterText = (d: DeadLetter) =>
  `${d.deviceId} revision ${d.revision} (${d.at.toISOString()}): ` +
  `${d.status === undefined ? '' : d.status === 200 ? 'rejected: ' : `HTTP ${d.status}: `}${d.error}`;

/** Leaves a request for the daemon in sync_state; a running daemon looks for one every sync.idleMs, and ends its waits for it. */
function request(config: Config, key: string, what: string, action: string): Promise<{ requested: string; daemonRunning: boolean }> {
  if (!config.sync.enabled) throw new RefusedError('sync is off (sync.enabled: false)');
  return withSync(config, (repo, store, audit) => {
    store.durable(() => {
      repo.setState(key, new Date().toISOString());
      localAudit(audit, action, 'sync');
    });
    // A paused sync resumes on a technician's request.
    return { requested: what, daemonRunning: daemonRunning(config.agent.dataDir) };
  });
}

const requestText = (r: { requested: string; daemonRunning: boolean }) =>
  `${r.requested} requested${r.daemonRunning ? '' : '; the daemon is not running and does it when it starts'}\n`;

export function registerSyncCommands(program: Command, result: { code: number }): void {
  const sync = program.command('sync').description('upstream sync of the inventory to the CMMS (docs/upstream-api.md)');
  const local = (what: string) => `${what}; the daemon acts on it when it starts`;
  apiOptions(
    sync.command('status').description('connected or not, last success, backlog, dead letters, next retry (reads the database when the daemon is down)'),
  ).action(async (o: ApiOptions) => {
    result.code = await runApi(
      o,
      async (client) => ({ ...(await client.call<SyncStatus>('GET', '/api/v1/sync/status')).body, daemonRunning: true }),
      statusText,
      { what: 'read from the database directly', run: status },
    );
  });
  for (const [name, key, what, description] of [
    ['now', SYNC_STATE.requestNow, 'a sync', 'send what waits now, ending any backoff or Retry-After wait, and resume a sync paused on a refused token'],
    [
      'reconcile',
      SYNC_STATE.requestReconcile,
      'a reconciliation',
      'compare with what the receiver holds and queue every device it lacks or holds at an older revision',
    ],
  ] as const) {
    apiOptions(sync.command(name).description(description)).action(async (o: ApiOptions) => {
      result.code = await runApi(
        o,
        async (client) => {
          await client.call('POST', `/api/v1/sync/${name}`);
          return { requested: what, daemonRunning: true };
        },
        requestText,
        { what: local(`${what} requested in the database`), writes: true, run: (config) => request(config, key, what, `sync.${name}`) },
      );
    });
  }
  apiOptions(sync.command('dead-letters').description('items the receiver refused, with its reason')).action(async (o: ApiOptions) => {
    result.code = await runApi(
      o,
      async (client) => (await client.call<{ items: DeadLetter[] }>('GET', '/api/v1/sync/dead-letters')).body.items.map((d) => ({ ...d, at: new Date(d.at) })),
      (rows: DeadLetter[]) => (rows.length === 0 ? 'no dead letters\n' : `${rows.map(deadLetterText).join('\n')}\n`),
      {
        what: 'read from the database directly',
        run: (config) => withSync(config, (repo) => repo.deadLetters(), 'read'),
      },
    );
  });
  apiOptions(
    sync
      .command('retry-dead-letters')
      .description("put every dead letter back into the outbox, at its device's current revision, and every refused event back in the queue"),
  ).action(async (o: ApiOptions) => {
    result.code = await runApi(
      o,
      async (client) => (await client.call<Retried>('POST', '/api/v1/sync/dead-letters/retry')).body,
      (r: Retried) => `${r.requeued} item(s)${r.events ? ` and ${r.events} refused event(s)` : ''} queued again\n`,
      {
        what: 'queued again in the database directly',
        writes: true,
        run: (config) =>
          withSync(config, (repo, store, audit) =>
            store.durable((): Retried => {
              const requeued = repo.retryDeadLetters();
              const events = repo.events.retryRefused();
              localAudit(audit, 'sync.retryDeadLetters', 'sync', { requeued, ...(events > 0 ? { events } : {}) });
              return { requeued, ...(events > 0 ? { events } : {}) };
            }),
          ),
      },
    );
  });
}
