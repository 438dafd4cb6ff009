/**
 * The events side of the reference receiver (docs/upstream-api.md,
 * "Events"): the events (report findings) a gateway sends, checked
 * strictly against the contract, stored once per eventId (a resend is a
 * `duplicate`), and listed back in the order they arrived.
 */
import type Database from 'better-sqlite3';

/** The finding kinds of the contract (agent/report, docs/report.md). */
export const FINDING_KINDS = [
  'shadow.unenrolled_client',
  'shadow.uncertified_announcement',
  'shadow.unprovisioned_server',
  'shadow.identity_conflict',
  'unpatched',
  'patch_unknown',
  'stale',
  'expiring',
  'revoked_connecting',
] as const;
export const EVENT_TYPES = ['finding.opened', 'finding.resolved'] as const;

const EVENT_KEYS = ['eventId', 'type', 'occurredAt', 'finding'];
const FINDING_KEYS = ['id', 'kind', 'subject', 'deviceId', 'summary', 'evidence', 'firstSeen', 'lastSeen'];

type Answer = { status: number; body: unknown };
export interface EventResult {
  eventId: string;
  status: 'stored' | 'duplicate' | 'rejected';
  error?: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isDate = (v: unknown) => typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(v) && !Number.isNaN(Date.parse(v));
const isText = (v: unknown, max: number) => typeof v === 'string' && v !== '' && v.length <= max;
const extra = (o: Record<string, unknown>, allowed: string[]) => Object.keys(o).find((k) => !allowed.includes(k));

/** What is wrong with an event whose eventId could be read, or undefined when it is the contract's. */
export function badEvent(e: Record<string, unknown>): string | undefined {
  const unknown = extra(e, EVENT_KEYS);
  if (unknown !== undefined) return `unknown field ${unknown}`;
  if (!(EVENT_TYPES as readonly unknown[]).includes(e.type)) return `type must be one of ${EVENT_TYPES.join(', ')}`;
  if (!isDate(e.occurredAt)) return 'occurredAt must be an ISO 8601 date-time';
  const f = e.finding;
  if (!isObject(f)) return 'finding must be an object';
  const unknownF = extra(f, FINDING_KEYS);
  if (unknownF !== undefined) return `unknown field finding.${unknownF}`;
  const missing = FINDING_KEYS.find((k) => !(k in f));
  if (missing !== undefined) return `finding.${missing} is required`;
  if (!Number.isInteger(f.id) || (f.id as number) < 1) return 'finding.id must be a positive integer';
  if (!(FINDING_KINDS as readonly unknown[]).includes(f.kind)) return `finding.kind must be one of ${FINDING_KINDS.join(', ')}`;
  if (!isText(f.subject, 1_000)) return 'finding.subject must be a non-empty string';
  if (f.deviceId !== null && !isText(f.deviceId, 200)) return 'finding.deviceId must be a non-empty string or null';
  if (!isText(f.summary, 10_000)) return 'finding.summary must be a non-empty string';
  if (!isObject(f.evidence)) return 'finding.evidence must be an object';
  if (!isDate(f.firstSeen) || !isDate(f.lastSeen)) return 'finding.firstSeen and finding.lastSeen must be ISO 8601 date-times';
  return undefined;
}

/**
 * The events' tables in the receiver's database, and the two routes:
 * POST .../events:batch and GET .../events?cursor=&limit=.
 */
export class ReferenceEvents {
  private readonly find;
  private readonly insert;
  private readonly logResult;
  private readonly page;

  constructor(private readonly db: Database.Database) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, gateway_id TEXT NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL,
        kind TEXT NOT NULL, occurred_at TEXT NOT NULL, body TEXT NOT NULL, received_at TEXT NOT NULL, UNIQUE (gateway_id, event_id)) STRICT;
      CREATE TABLE IF NOT EXISTS event_results (gateway_id TEXT NOT NULL, event_id TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
        at TEXT NOT NULL) STRICT;
    `);
    this.find = db.prepare('SELECT 1 AS x FROM events WHERE gateway_id = ? AND event_id = ?');
    this.insert = db.prepare('INSERT INTO events (gateway_id, event_id, type, kind, occurred_at, body, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.logResult = db.prepare('INSERT INTO event_results (gateway_id, event_id, status, error, at) VALUES (?, ?, ?, ?, ?)');
    this.page = db.prepare('SELECT seq, body, received_at FROM events WHERE gateway_id = ? AND seq > ? ORDER BY seq LIMIT ?');
  }

  /** POST: 400 for a body that is not `{"events":[...]}` with an eventId in each, else 200 with one result per event. */
  batch(gateway: string, raw: Buffer): Answer {
    let events: unknown;
    try {
      const parsed = JSON.parse(raw.toString('utf8')) as unknown;
      if (!isObject(parsed) || extra(parsed, ['events']) !== undefined) return { status: 400, body: { error: 'the body must be {"events":[...]}' } };
      events = parsed.events;
    } catch {
      return { status: 400, body: { error: 'the body is not JSON' } };
    }
    if (!Array.isArray(events) || events.length === 0) return { status: 400, body: { error: 'events must be a non-empty array' } };
    if (events.length > 10_000) return { status: 400, body: { error: 'at most 10000 events per request' } };
    // Without an eventId an event cannot be answered for: the body is refused as a whole.
    const nameless = events.findIndex((e) => !isObject(e) || !isText(e.eventId, 200));
    if (nameless >= 0) return { status: 400, body: { error: `events[${nameless}] has no eventId (a non-empty string of at most 200 characters)` } };
    const now = new Date().toISOString();
    const results = this.db.transaction(() =>
      (events as Record<string, unknown>[]).map((e): EventResult => {
        const eventId = e.eventId as string;
        const bad = badEvent(e);
        const result: EventResult = bad
          ? { eventId, status: 'rejected', error: `${eventId}: ${bad}` }
          : this.find.get(gateway, eventId)
            ? { eventId, status: 'duplicate' }
            : { eventId, status: 'stored' };
        if (result.status === 'stored') {
          const f = e.finding as Record<string, unknown>;
          this.insert.run(gateway, eventId, e.type as string, f.kind as string, e.occurredAt as string, JSON.stringify(e), now);
        }
        this.logResult.run(gateway, eventId, result.status, result.error ?? null, now);
        return result;
      }),
    )();
    return { status: 200, body: { results } };
  }

  /** GET: the events as stored, in the order they arrived; `cursor` is the last `seq` of the page before. */
  list(gateway: string, cursor: string | null, limitParam: string | null): Answer {
    const limit = Math.min(Math.max(Number(limitParam ?? 1000) || 1000, 1), 10_000);
    const after = cursor && /^\d+$/.test(cursor) ? Number(cursor) : 0;
    const rows = this.page.all(gateway, after, limit) as { seq: number; body: string; received_at: string }[];
    const items = rows.map((r) => ({ seq: r.seq, receivedAt: r.received_at, event: JSON.parse(r.body) as unknown }));
    return { status: 200, body: { items, nextCursor: rows.length === limit ? String(rows.at(-1)!.seq) : null } };
  }
}
