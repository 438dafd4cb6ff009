import { PeerError } from '../errors.js';
import type { Store } from '../store/database.js';
import type { EventOutboxRepository, QueuedEvent } from '../store/eventOutboxRepository.js';
import type { UpstreamAdapter, UpstreamAnswer } from './adapter.js';
import { retryAfterMs } from './sender.js';
import { UpstreamUnreachable } from './upstreamClient.js';

/** A request of events: the events, in the outbox's order, and the body made of their stored bodies. */
export interface EventBatch {
  events: QueuedEvent[];
  body: string;
}

/** What the receiver said of each event in an answered request. */
export interface EventCounts {
  stored: number;
  duplicate: number;
  rejected: number;
  /** Refused alone with an HTTP status (400, 413, 422). */
  refused: number;
}

export type EventOutcome =
  /** `missing`: events the answer named no result for (they stay, and are sent again after a backoff). */
  | { kind: 'answered'; counts: EventCounts; missing: number }
  /** The request was refused (400, 413, 422) with more than one event in it: send fewer, until the one at fault is alone. */
  | { kind: 'narrow'; message: string }
  /** 404: the receiver does not know the events route (a receiver of an older contract). */
  | { kind: 'unknown-route'; message: string }
  | { kind: 'unauthorized'; message: string; tokenVersion?: number }
  | { kind: 'throttled'; message: string; retryAfterMs?: number }
  | { kind: 'failed'; message: string; unreachable: boolean };

export interface EventSenderDeps {
  store: Store;
  events: EventOutboxRepository;
  client: UpstreamAdapter;
}

const PREFIX = '{"events":[';

/**
 * The events side of the upstream contract (docs/upstream-api.md, "Events"),
 * without the scheduling: the next request from the outbox, one send, and
 * what its answer changes. Each event carries its id, by which the receiver
 * dedups, so nothing is stored per request: a resend after a crash or a lost
 * answer is answered `duplicate`, and the event leaves the outbox then.
 */
export class EventSender {
  constructor(private readonly deps: EventSenderDeps) {}

  /** The oldest waiting events, at most `limit` and `maxBytes` (one event at least); undefined when none wait. */
  next(limit: number, maxBytes: number): EventBatch | undefined {
    const events: QueuedEvent[] = [];
    let bytes = PREFIX.length + 2;
    for (const event of this.deps.events.waiting(limit)) {
      const size = Buffer.byteLength(event.body) + 1;
      if (events.length > 0 && bytes + size > maxBytes) break;
      events.push(event);
      bytes += size;
    }
    if (events.length === 0) return undefined;
    // The bodies as stored, byte for byte: what was committed with the finding is what the receiver gets.
    return { events, body: `${PREFIX}${events.map((e) => e.body).join(',')}]}` };
  }

  async send(batch: EventBatch): Promise<EventOutcome> {
    const { events, store } = this.deps;
    store.transaction(() => events.countAttempt(batch.events.map((e) => e.eventId)));
    let answer: UpstreamAnswer;
    try {
      answer = await this.deps.client.postEvents(batch.body);
    } catch (err) {
      return { kind: 'failed', message: (err as Error).message, unreachable: err instanceof UpstreamUnreachable };
    }
    const detail = `${answer.status} ${answer.body.slice(0, 300)}`;
    if (answer.status === 200) return this.answered(batch, answer.body);
    if (answer.status === 401)
      return {
        kind: 'unauthorized',
        message: `401 from the receiver: ${answer.body.slice(0, 300)}`,
        ...(answer.tokenVersion !== undefined ? { tokenVersion: answer.tokenVersion } : {}),
      };
    if (answer.status === 404) return { kind: 'unknown-route', message: `the receiver does not know POST .../events:batch: ${detail}` };
    if (answer.status === 429 || answer.status === 503) {
      const wait = retryAfterMs(answer.headers['retry-after']);
      return { kind: 'throttled', message: `receiver busy: ${detail}`, ...(wait !== undefined ? { retryAfterMs: wait } : {}) };
    }
    if (answer.status === 400 || answer.status === 413 || answer.status === 422) {
      if (batch.events.length > 1) return { kind: 'narrow', message: `receiver refused ${batch.events.length} events: ${detail}` };
      // Alone and still refused: this event is at fault. Kept, marked, and no longer sent; the others go on.
      store.transaction(() => events.refuse(batch.events[0]!.eventId, answer.status, answer.body.slice(0, 2_000) || `HTTP ${answer.status}`));
      return { kind: 'answered', counts: { stored: 0, duplicate: 0, rejected: 0, refused: 1 }, missing: 0 };
    }
    return { kind: 'failed', message: `receiver answered ${detail}`, unreachable: false };
  }

  /** 200: stored and duplicate events leave the outbox, rejected ones are kept as refused; one transaction. */
  private answered(batch: EventBatch, text: string): EventOutcome {
    const { events, store } = this.deps;
    let results: { eventId?: unknown; status?: unknown; error?: unknown }[];
    try {
      const parsed = JSON.parse(text) as { results?: unknown };
      if (!Array.isArray(parsed.results)) throw new PeerError('UPSTREAM_ANSWER_INVALID', 'no results array');
      results = parsed.results as typeof results;
    } catch (err) {
      return { kind: 'failed', message: `the receiver's answer to events is not the contract's: ${(err as Error).message}`, unreachable: false };
    }
    const sent = new Set(batch.events.map((e) => e.eventId));
    const counts: EventCounts = { stored: 0, duplicate: 0, rejected: 0, refused: 0 };
    // Not fsynced: nothing leaves the process because of it; an answer lost to a crash only sends an event again (duplicate).
    store.transaction(() => {
      for (const r of results) {
        // A result for an event not in this request, or named twice, settles nothing.
        if (typeof r.eventId !== 'string' || !sent.delete(r.eventId)) continue;
        if (r.status === 'stored' || r.status === 'duplicate') events.delivered(r.eventId);
        else if (r.status === 'rejected') events.refuse(r.eventId, 200, typeof r.error === 'string' && r.error !== '' ? r.error : 'rejected by the receiver');
        else {
          sent.add(r.eventId);
          continue;
        }
        counts[r.status] += 1;
      }
    });
    return { kind: 'answered', counts, missing: sent.size };
  }
}
