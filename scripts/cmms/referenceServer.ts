/**
 * The reference receiver of the upstream contract (docs/upstream-api.md):
 * what a CMMS adapter must do, with its own SQLite file, so the demo, the
 * tests and the benchmark have a real receiver. Switches inject what a
 * real uplink and a real CMMS do to a sender: latency, errors, 429 bursts
 * with Retry-After, answers lost after the data was committed, and records
 * it refuses. The events (report findings) are in referenceEvents.ts. See --help.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { ReferenceEvents } from './referenceEvents.js';

const HELP = `cmms-reference-server: the upstream contract's reference receiver

  --db FILE              its SQLite file (created if absent)            required
  --cert FILE --key FILE its TLS server certificate and key (PEM)      required
  --host ADDR            address to listen on (default 127.0.0.1)
  --port N               port (default 0: any free one)
  --client-ca FILE       require a client certificate chaining to these CAs (mutual TLS)
  --token-file FILE      require "Authorization: Bearer <first line of FILE>" (read per request)
  --latency-ms N         wait this long before answering
  --fail-every N         answer every N-th batch with 500, before touching anything (1: every batch, a CMMS down)
  --error-rate P         answer a batch with 500 with probability P (0..1)
  --fail-item ID         answer 500 to any batch holding this device id, before touching anything (repeatable):
                         middleware that fails on one record
  --fail-status N        the status --fail-every, --error-rate and --fail-item answer with (default 500)
  --throttle-every N     every N-th batch starts a burst of 429s ...
  --throttle-burst N     ... this many long (default 1) ...
  --retry-after S        ... each with Retry-After: S (default 1)
  --lose-every N         commit every N-th batch, then drop the connection without an answer
  --poison ID            answer 422 to any batch holding this device id (repeatable)
  --reject ID            answer "rejected" for this device's items, storing nothing of them (repeatable)
  --max-body-bytes N     refuse larger bodies with 413 (default 67108864)
  --no-events            answer 404 to the events routes, as a receiver of the contract before events did

The fault switches above act on device batches only; --latency-ms, --token-file, --client-ca and
--max-body-bytes act on every request. Events (POST .../events:batch) are checked strictly: a bad
event is answered "rejected" with the reason, a body that is not {"events":[...]} with an eventId
in each is a 400; an eventId already stored is answered "duplicate" and not stored again.
GET .../events?cursor=&limit= lists them in the order they arrived.

Prints one JSON line {"port":N} once it listens. Stops on SIGTERM or SIGINT.
`;

const { values: o } = parseArgs({
  options: {
    db: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'client-ca': { type: 'string' },
    'token-file': { type: 'string' },
    'latency-ms': { type: 'string', default: '0' },
    'fail-every': { type: 'string', default: '0' },
    'error-rate': { type: 'string', default: '0' },
    'fail-item': { type: 'string', multiple: true, default: [] },
    'fail-status': { type: 'string', default: '500' },
    'throttle-every': { type: 'string', default: '0' },
    'throttle-burst': { type: 'string', default: '1' },
    'retry-after': { type: 'string', default: '1' },
    'lose-every': { type: 'string', default: '0' },
    poison: { type: 'string', multiple: true, default: [] },
    reject: { type: 'string', multiple: true, default: [] },
    'max-body-bytes': { type: 'string', default: String(64 * 1024 * 1024) },
    'no-events': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (o.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
if (!o.db || !o.cert || !o.key) {
  process.stderr.write(`--db, --cert and --key are required\n\n${HELP}`);
  process.exit(64);
}
const num = (name: keyof typeof o) => {
  const n = Number(o[name]);
  if (!Number.isFinite(n) || n < 0) {
    process.stderr.write(`--${String(name)} takes a number >= 0\n`);
    process.exit(64);
  }
  return n;
};
const latency = num('latency-ms');
const failEvery = num('fail-every');
const errorRate = num('error-rate');
const throttleEvery = num('throttle-every');
const throttleBurst = num('throttle-burst');
const retryAfter = num('retry-after');
const loseEvery = num('lose-every');
const maxBody = num('max-body-bytes');
const failStatus = num('fail-status');
if (!Number.isInteger(failStatus) || failStatus < 500 || failStatus > 599) {
  process.stderr.write('--fail-status takes a status from 500 to 599\n');
  process.exit(64);
}
const failItems = new Set(o['fail-item']);
const poison = new Set(o.poison);
const reject = new Set(o.reject);

const db = new Database(o.db);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.exec(`
  CREATE TABLE IF NOT EXISTS devices (gateway_id TEXT NOT NULL, device_id TEXT NOT NULL, revision INTEGER NOT NULL, op TEXT NOT NULL,
    record TEXT NOT NULL, observed_at TEXT NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (gateway_id, device_id)) STRICT;
  CREATE TABLE IF NOT EXISTS item_results (gateway_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, device_id TEXT NOT NULL,
    revision INTEGER NOT NULL, status TEXT NOT NULL) STRICT;
  CREATE TABLE IF NOT EXISTS apply_log (gateway_id TEXT NOT NULL, device_id TEXT NOT NULL, revision INTEGER NOT NULL, at TEXT NOT NULL) STRICT;
  CREATE TABLE IF NOT EXISTS requests (received_ms INTEGER NOT NULL, at_ms INTEGER NOT NULL, gateway_id TEXT NOT NULL, idempotency_key TEXT,
    status INTEGER NOT NULL) STRICT;
  CREATE TABLE IF NOT EXISTS idempotency (gateway_id TEXT NOT NULL, key TEXT NOT NULL, body_sha256 TEXT NOT NULL, response TEXT NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (gateway_id, key)) STRICT;
`);
const held = db.prepare('SELECT revision FROM devices WHERE gateway_id = ? AND device_id = ?');
const upsert = db.prepare(`INSERT INTO devices (gateway_id, device_id, revision, op, record, observed_at, applied_at) VALUES (?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT (gateway_id, device_id) DO UPDATE SET revision = excluded.revision, op = excluded.op, record = excluded.record,
  observed_at = excluded.observed_at, applied_at = excluded.applied_at`);
const logResult = db.prepare('INSERT INTO item_results (gateway_id, idempotency_key, device_id, revision, status) VALUES (?, ?, ?, ?, ?)');
const logApply = db.prepare('INSERT INTO apply_log (gateway_id, device_id, revision, at) VALUES (?, ?, ?, ?)');
const seenKey = db.prepare('SELECT body_sha256, response FROM idempotency WHERE gateway_id = ? AND key = ?');
const storeKey = db.prepare('INSERT INTO idempotency (gateway_id, key, body_sha256, response, at) VALUES (?, ?, ?, ?, ?)');
const events = o['no-events'] ? undefined : new ReferenceEvents(db);
const page = db.prepare('SELECT device_id AS deviceId, revision FROM devices WHERE gateway_id = ? AND device_id > ? ORDER BY device_id LIMIT ?');

interface Item {
  deviceId: string;
  revision: number;
  op: 'upsert' | 'retire';
  observedAt: string;
  record: Record<string, unknown>;
}

/** The contract's item shape, checked strictly: the reason, or undefined when it is one. */
function badItem(i: unknown): string | undefined {
  if (typeof i !== 'object' || i === null) return 'an item is not an object';
  const it = i as Partial<Item>;
  if (typeof it.deviceId !== 'string' || it.deviceId === '' || it.deviceId.length > 200) return 'deviceId must be a non-empty string';
  if (!Number.isInteger(it.revision) || (it.revision as number) < 1) return `${it.deviceId}: revision must be a positive integer`;
  if (it.op !== 'upsert' && it.op !== 'retire') return `${it.deviceId}: op must be upsert or retire`;
  if (typeof it.observedAt !== 'string' || Number.isNaN(Date.parse(it.observedAt))) return `${it.deviceId}: observedAt must be a date-time`;
  if (typeof it.record !== 'object' || it.record === null || (it.record as { deviceId?: unknown }).deviceId !== it.deviceId)
    return `${it.deviceId}: record must be an object with the same deviceId`;
  const bad = badConfiguration((it.record as { configuration?: unknown }).configuration);
  if (bad) return `${it.deviceId}: record.configuration ${bad}`;
  return undefined;
}

const CONFIG_STATUSES = ['pending', 'in_sync', 'drifted', 'failed'];
/** The record's configuration: absent (an agent before it), null, or {profile, version, status}. */
function badConfiguration(c: unknown): string | undefined {
  if (c === undefined || c === null) return undefined;
  if (typeof c !== 'object' || Array.isArray(c)) return 'must be an object or null';
  const { profile, version, status, ...rest } = c as Record<string, unknown>;
  if (Object.keys(rest).length > 0) return `has an unknown field ${Object.keys(rest)[0]}`;
  if (typeof profile !== 'string' || profile === '') return 'profile must be a non-empty string';
  if (!Number.isInteger(version) || (version as number) < 1) return 'version must be a positive integer';
  if (!CONFIG_STATUSES.includes(status as string)) return `status must be one of ${CONFIG_STATUSES.join(', ')}`;
  return undefined;
}

const logRequest = db.prepare('INSERT INTO requests (received_ms, at_ms, gateway_id, idempotency_key, status) VALUES (?, ?, ?, ?, ?)');
/** When each request's body was complete (before any injected latency). */
const received = new WeakMap<IncomingMessage, number>();

const json = (res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}) => {
  const text = JSON.stringify(value);
  // Every batch request and its answer are logged, for the tests (a dropped answer is logged as 0).
  const m = /\/devices:batch$/.exec(res.req.url ?? '');
  if (m)
    logRequest.run(
      received.get(res.req) ?? Date.now(),
      Date.now(),
      /gateways\/([^/]+)/.exec(res.req.url ?? '')?.[1] ?? '',
      (res.req.headers['idempotency-key'] as string | undefined) ?? null,
      status,
    );
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
};
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

function authorised(req: IncomingMessage): boolean {
  if (!o['token-file']) return true;
  const wanted = Buffer.from(`Bearer ${readFileSync(o['token-file'], 'utf8').split(/\r?\n/)[0]?.trim() ?? ''}`);
  const got = Buffer.from(req.headers.authorization ?? '');
  return got.length === wanted.length && timingSafeEqual(got, wanted);
}

let batches = 0;
let burstLeft = 0;

async function batch(req: IncomingMessage, res: ServerResponse, gateway: string, raw: Buffer): Promise<void> {
  batches += 1;
  const key = req.headers['idempotency-key'];
  if (typeof key !== 'string' || key === '' || key.length > 200) return json(res, 400, { error: 'Idempotency-Key header required' });
  if (throttleEvery > 0 && batches % throttleEvery === 0) burstLeft = throttleBurst;
  if (burstLeft > 0) {
    burstLeft -= 1;
    return json(res, 429, { error: 'slow down' }, { 'retry-after': String(retryAfter) });
  }
  if ((failEvery > 0 && batches % failEvery === 0) || Math.random() < errorRate) return json(res, failStatus, { error: 'injected failure' });
  const hash = createHash('sha256').update(raw).digest('hex');
  const seen = seenKey.get(gateway, key) as { body_sha256: string; response: string } | undefined;
  if (seen) {
    if (seen.body_sha256 !== hash) return json(res, 422, { error: 'this Idempotency-Key was used with another body' });
    return json(res, 200, JSON.parse(seen.response));
  }
  let items: unknown;
  try {
    items = (JSON.parse(raw.toString('utf8')) as { items?: unknown }).items;
  } catch {
    return json(res, 400, { error: 'the body is not JSON' });
  }
  if (!Array.isArray(items) || items.length === 0) return json(res, 400, { error: 'items must be a non-empty array' });
  const bad = items.map(badItem).find((b) => b !== undefined);
  if (bad) return json(res, 400, { error: bad });
  const failing = (items as Item[]).find((i) => failItems.has(i.deviceId));
  if (failing) return json(res, failStatus, { error: `internal error while storing ${failing.deviceId} (--fail-item)` });
  const poisoned = (items as Item[]).find((i) => poison.has(i.deviceId));
  if (poisoned) return json(res, 422, { error: `${poisoned.deviceId}: this record cannot be stored (poison)` });
  const now = new Date().toISOString();
  const results = db.transaction(() => {
    const out = (items as Item[]).map((i) => {
      const result = (() => {
        if (reject.has(i.deviceId)) return { deviceId: i.deviceId, revision: i.revision, status: 'rejected', error: `${i.deviceId}: refused by --reject` };
        const current = held.get(gateway, i.deviceId) as { revision: number } | undefined;
        if (current && current.revision >= i.revision) return { deviceId: i.deviceId, revision: i.revision, status: 'stale' };
        upsert.run(gateway, i.deviceId, i.revision, i.op, JSON.stringify(i.record), i.observedAt, now);
        logApply.run(gateway, i.deviceId, i.revision, now);
        return { deviceId: i.deviceId, revision: i.revision, status: 'applied' };
      })();
      logResult.run(gateway, key, i.deviceId, i.revision, result.status);
      return result;
    });
    storeKey.run(gateway, key, hash, JSON.stringify({ results: out }), now);
    return out;
  })();
  if (loseEvery > 0 && batches % loseEvery === 0) {
    // Committed, then the answer is lost on the way back.
    logRequest.run(received.get(req) ?? Date.now(), Date.now(), gateway, key, 0);
    req.socket.destroy();
    return;
  }
  json(res, 200, { results });
}

const server = createServer(
  {
    cert: readFileSync(o.cert, 'utf8'),
    key: readFileSync(o.key, 'utf8'),
    ...(o['client-ca'] ? { ca: readFileSync(o['client-ca'], 'utf8'), requestCert: true, rejectUnauthorized: true } : {}),
  },
  (req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= maxBody) chunks.push(c);
    });
    req.on('end', () => {
      received.set(req, Date.now());
      void (async () => {
        if (latency > 0) await wait(latency);
        if (!authorised(req)) return json(res, 401, { error: 'bad or missing bearer token' });
        const url = new URL(req.url ?? '/', 'https://receiver');
        const e = /^\/v1\/gateways\/([A-Za-z0-9._-]{1,64})\/events(:batch)?$/.exec(url.pathname);
        if (e && events) {
          if (size > maxBody) return json(res, 413, { error: `body larger than ${maxBody} bytes` });
          const answer =
            e[2] && req.method === 'POST'
              ? events.batch(e[1]!, Buffer.concat(chunks))
              : !e[2] && req.method === 'GET'
                ? events.list(e[1]!, url.searchParams.get('cursor'), url.searchParams.get('limit'))
                : { status: 405, body: { error: 'method not allowed' } };
          return json(res, answer.status, answer.body);
        }
        const m = /^\/v1\/gateways\/([A-Za-z0-9._-]{1,64})\/devices(:batch)?$/.exec(url.pathname);
        if (!m) return json(res, 404, { error: 'no such route' });
        const gateway = m[1]!;
        if (m[2] && req.method === 'POST') {
          if (size > maxBody) return json(res, 413, { error: `body larger than ${maxBody} bytes` });
          return batch(req, res, gateway, Buffer.concat(chunks));
        }
        if (!m[2] && req.method === 'GET') {
          const limit = Math.min(Math.max(Number(url.searchParams.get('limit') ?? 1000) || 1000, 1), 10_000);
          const items = page.all(gateway, url.searchParams.get('cursor') ?? '', limit) as { deviceId: string; revision: number }[];
          return json(res, 200, { items, nextCursor: items.length === limit ? items.at(-1)!.deviceId : null });
        }
        return json(res, 405, { error: 'method not allowed' });
      })().catch((err: Error) => json(res, 500, { error: err.message }));
    });
  },
);
server.listen(Number(o.port), o.host, () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`);
});
const stop = () => {
  server.close(() => (db.close(), process.exit(0)));
  server.closeAllConnections();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
