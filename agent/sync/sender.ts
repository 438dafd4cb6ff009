import { randomUUID } from 'node:crypto';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import type { OutboxEntry, StoredBatch, SyncRepository } from '../store/syncRepository.js';
import type { UpstreamItem } from './record.js';
import type { UpstreamAdapter, UpstreamAnswer } from './adapter.js';
import { UpstreamUnreachable } from './upstreamClient.js';
import { PeerError } from '../errors.js';

export type BatchOutcome =
  | { kind: 'answered'; counts: Record<string, number> }
  | { kind: 'split'; message: string; keys: string[] }
  | { kind: 'unauthorized'; message: string; tokenVersion?: number }
  | { kind: 'throttled'; message: string; retryAfterMs?: number }
  /** `status`: the receiver's HTTP status, when it answered. */
  | { kind: 'failed'; message: string; unreachable: boolean; status?: number; detail?: string; partial?: boolean };

/** What a reconciliation found: queued to be sent, and the devices that had diverged (no change waiting explains them). */
export interface Reconciliation {
  queued: number;
  /** The receiver lacks them. */
  missing: number;
  /** The receiver holds an older revision. */
  behind: number;
  /** The receiver holds a newer revision than this database. */
  ahead: number;
  /** A few of the devices that diverged. */
  examples: string[];
}

export interface SyncSenderDeps {
  log: Logger;
  store: Store;
  repo: SyncRepository;
  client: UpstreamAdapter;
  /** The items of the longest-waiting outbox entries, each at its device's current revision. */
  items: (limit: number) => UpstreamItem[];
  limits: () => { batchSize: number; batchMaxBytes: number };
}

/** At most this long is a Retry-After honoured (a receiver asking for a day is asked again in an hour). */
const MAX_RETRY_AFTER_MS = 3_600_000;
/** Page size of the reconciliation listing. */
const LIST_PAGE = 1_000;

/** Retry-After as milliseconds: delta-seconds or an HTTP date (RFC 9110 10.2.3); undefined when absent or unreadable. */
export function retryAfterMs(header: string | string[] | undefined, now = Date.now()): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (!value) return undefined;
  const ms = /^\d+$/.test(value.trim()) ? Number(value.trim()) * 1000 : Date.parse(value) - now;
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS) : undefined;
}

const body = (items: UpstreamItem[]) => JSON.stringify({ items });

/**
 * The batch protocol of the upstream contract, without the scheduling:
 * what to send next (a stored batch first), one send and what its answer
 * means for the outbox, and reconciliation. A batch is stored durably
 * before it is sent; what an answer changes (outbox, batch, dead letters)
 * is one transaction.
 */
export class SyncSender {
  private ackedDuringReconcile: Map<string, number> | undefined;

  constructor(private readonly deps: SyncSenderDeps) {}

  /**
   * The next batch to send: the oldest stored one `available` (sent again
   * under its key), else, if `build`, a new one made from outbox entries in
   * no stored batch and stored before it is sent; undefined when none.
   */
  next(available: (key: string) => boolean, build: boolean): StoredBatch | undefined {
    const key = this.deps.repo.batchKeys().find(available);
    const stored = key !== undefined ? this.deps.repo.batch(key) : undefined;
    return stored ?? (build ? this.build() : undefined);
  }

  /** A new batch from the outbox, stored durably; undefined when nothing waits outside stored batches. */
  private build(): StoredBatch | undefined {
    const { repo, store } = this.deps;
    const { batchSize, batchMaxBytes } = this.deps.limits();
    const entries: OutboxEntry[] = [];
    const parts: string[] = [];
    let bytes = 12;
    for (const item of this.deps.items(batchSize)) {
      const text = JSON.stringify(item);
      const size = Buffer.byteLength(text) + 1;
      if (parts.length > 0 && bytes + size > batchMaxBytes) break;
      parts.push(text);
      entries.push({ deviceId: item.deviceId, revision: item.revision });
      bytes += size;
    }
    if (parts.length === 0) return undefined;
    const key = randomUUID();
    const text = `{"items":[${parts.join(',')}]}`;
    // Stored (durably) before it leaves: a retry after any crash sends the same bytes under the same key.
    store.durable(() => repo.storeBatch(key, entries, text));
    return { key, createdAt: new Date(), items: entries, body: text, attempts: 0 };
  }

  async send(batch: StoredBatch): Promise<BatchOutcome> {
    const { repo, store } = this.deps;
    // Counted for the status only: a count lost to a crash costs nothing.
    store.transaction(() => repo.countAttempt(batch.key));
    let answer: UpstreamAnswer;
    try {
      answer = await this.deps.client.postBatch(batch.key, batch.body);
    } catch (err) {
      return { kind: 'failed', message: (err as Error).message, unreachable: err instanceof UpstreamUnreachable };
    }
    const detail = `${answer.status} ${answer.body.slice(0, 300)}`;
    if (answer.status === 200) return this.answered(batch, answer);
    if (answer.status === 401)
      return {
        kind: 'unauthorized',
        message: `401 from the receiver: ${answer.body.slice(0, 300)}`,
        ...(answer.tokenVersion !== undefined ? { tokenVersion: answer.tokenVersion } : {}),
      };
    if (answer.status === 429 || answer.status === 503) {
      const wait = retryAfterMs(answer.headers['retry-after']);
      return { kind: 'throttled', message: `receiver busy: ${detail}`, ...(wait !== undefined ? { retryAfterMs: wait } : {}) };
    }
    if (answer.status === 400 || answer.status === 413 || answer.status === 422) return this.isolate(batch, answer.status, answer.body);
    return { kind: 'failed', message: `receiver answered ${detail}`, unreachable: false, status: answer.status, detail: answer.body };
  }

  /** 200: each item applied or stale leaves the outbox; rejected ones go to dead letters; the batch is done. */
  private answered(batch: StoredBatch, answer: UpstreamAnswer): BatchOutcome {
    const { repo, store, log } = this.deps;
    let results: { deviceId?: unknown; revision?: unknown; status?: unknown; error?: unknown }[];
    try {
      const parsed = JSON.parse(answer.body) as { results?: unknown };
      if (!Array.isArray(parsed.results)) throw new PeerError('UPSTREAM_ANSWER_INVALID', 'no results array');
      results = parsed.results as typeof results;
    } catch (err) {
      return { kind: 'failed', message: `the receiver's answer is not the contract's: ${(err as Error).message}`, unreachable: false };
    }
    const sent = new Map(batch.items.map((i) => [i.deviceId, i.revision]));
    const counts: Record<string, number> = {};
    // Not fsynced: nothing leaves the process because of it, and an acknowledgement lost to a crash only sends an item again (stale).
    store.transaction(() => {
      for (const r of results) {
        const revision = typeof r.deviceId === 'string' ? sent.get(r.deviceId) : undefined;
        // An answer for something not in this batch, or for another revision, acknowledges nothing.
        if (revision === undefined || r.revision !== revision) continue;
        const deviceId = r.deviceId as string;
        if (r.status === 'applied' || r.status === 'stale') {
          repo.acknowledge(deviceId, revision);
          this.ackedDuringReconcile?.set(deviceId, Math.max(revision, this.ackedDuringReconcile.get(deviceId) ?? 0));
        } else if (r.status === 'rejected') repo.deadLetter(deviceId, revision, 200, typeof r.error === 'string' ? r.error : 'rejected by the receiver');
        else continue;
        counts[r.status] = (counts[r.status] ?? 0) + 1;
      }
      repo.deleteBatch(batch.key);
    });
    if (counts.rejected) log.warn({ batch: batch.key, rejected: counts.rejected }, 'the receiver rejected items: they are in the dead letters');
    const answeredItems = Object.values(counts).reduce((a, b) => a + b, 0);
    if (answeredItems < batch.items.length) {
      // Items without a result (for the revision sent) stay in the outbox; a receiver that keeps leaving them out is backed off from.
      return {
        kind: 'failed',
        message: `the receiver answered ${answeredItems} of the ${batch.items.length} items (results must name each item's deviceId and the revision sent)`,
        unreachable: false,
        partial: true,
      };
    }
    return { kind: 'answered', counts };
  }

  /**
   * A batch the receiver refuses (400, 413, 422; 5xx answered too often):
   * split in two, each half sent on its own under a new key, until the one
   * item at fault is alone; that one goes to the dead letters with the
   * status and the receiver's answer (`answer`).
   */
  isolate(batch: StoredBatch, status: number, answer: string): BatchOutcome {
    const { repo, store, log } = this.deps;
    const items = (JSON.parse(batch.body) as { items: UpstreamItem[] }).items;
    const keys: string[] = [];
    store.durable(() => {
      repo.deleteBatch(batch.key);
      if (items.length === 1) {
        repo.deadLetter(items[0]!.deviceId, items[0]!.revision, status, answer);
        return;
      }
      const half = Math.ceil(items.length / 2);
      for (const part of [items.slice(0, half), items.slice(half)]) {
        const key = randomUUID();
        repo.storeBatch(
          key,
          part.map((i) => ({ deviceId: i.deviceId, revision: i.revision })),
          body(part),
          batch.createdAt,
        );
        keys.push(key);
      }
    });
    if (items.length === 1) {
      log.warn(
        { device: items[0]!.deviceId, revision: items[0]!.revision, status, batch: batch.key },
        'the receiver refuses this item: moved to the dead letters',
      );
      return { kind: 'answered', counts: { 'dead-letter': 1 } };
    }
    return { kind: 'split', message: `receiver refused a batch of ${items.length} (${status} ${answer.slice(0, 300)}): sending its halves`, keys };
  }

  /**
   * Lists what the receiver holds and queues every device it lacks or holds
   * at an older revision (one it holds newer is raised above it); says how
   * many were queued and how many of them had diverged: not waiting in the
   * outbox, a stored batch or the dead letters, yet not held at their revision.
   */
  async reconcile(): Promise<Reconciliation> {
    const { repo, store } = this.deps;
    // Answers that arrive while the listing is read are newer than it: what they acknowledge is not queued again.
    const acked = new Map<string, number>();
    this.ackedDuringReconcile = acked;
    try {
      return await this.compare(repo, store, acked);
    } finally {
      this.ackedDuringReconcile = undefined;
    }
  }

  private async compare(repo: SyncRepository, store: Store, acked: Map<string, number>): Promise<Reconciliation> {
    const remote = new Map<string, number>();
    let cursor: string | undefined;
    for (let pages = 0; pages < 100_000; pages++) {
      const answer = await this.deps.client.listDevices(cursor, LIST_PAGE);
      if (answer.status !== 200) {
        throw new PeerError('UPSTREAM_ANSWER_INVALID', `listing the receiver's devices: ${answer.status} ${answer.body.slice(0, 300)}`);
      }
      const page = JSON.parse(answer.body) as { items?: { deviceId?: unknown; revision?: unknown }[]; nextCursor?: unknown };
      for (const i of page.items ?? []) if (typeof i.deviceId === 'string' && typeof i.revision === 'number') remote.set(i.deviceId, i.revision);
      if (typeof page.nextCursor !== 'string' || page.nextCursor === '' || (page.items ?? []).length === 0) break;
      cursor = page.nextCursor;
    }
    const found: Reconciliation = { queued: 0, missing: 0, behind: 0, ahead: 0, examples: [] };
    const ahead: string[] = [];
    const dead = new Map(repo.deadLetters(100_000).map((d) => [d.deviceId, d.revision]));
    const inBatches = new Set(repo.batches().flatMap((b) => b.items.map((i) => i.deviceId)));
    const diverged = (deviceId: string, kind: 'missing' | 'behind' | 'ahead') => {
      found[kind] += 1;
      if (found.examples.length < 5) found.examples.push(deviceId);
    };
    store.durable(() => {
      // Read in the same transaction as the revisions: a change made meanwhile is in both or in neither.
      const waiting = repo.outboxDevices();
      for (const [deviceId, revision] of repo.revisions()) {
        // In a stored batch: its answer settles it.
        if (inBatches.has(deviceId)) continue;
        const listed = remote.get(deviceId);
        const held = Math.max(listed ?? 0, acked.get(deviceId) ?? 0) || undefined;
        if (held !== undefined && held > revision) {
          // The receiver holds a newer revision than this database has (it was restored from a backup, or the
          // receiver's was changed): the device is raised above it, or its next changes would be answered stale and lost.
          repo.raiseRevision(deviceId, held + 1);
          ahead.push(deviceId);
          diverged(deviceId, 'ahead');
          found.queued += 1;
        } else if ((held === undefined || held < revision) && dead.get(deviceId) !== revision) {
          // A dead letter waits for a technician (sync retry-dead-letters), not for the next reconciliation.
          // A device in the outbox is on its way: only one that is not, and not held at its revision, diverged.
          if (!waiting.has(deviceId)) diverged(deviceId, held === undefined ? 'missing' : 'behind');
          repo.queue(deviceId, revision);
          found.queued += 1;
        }
      }
    });
    if (ahead.length > 0)
      this.deps.log.warn(
        { devices: ahead.length, example: ahead[0] },
        'the receiver holds newer revisions than this database (restored from a backup?): those devices are sent again above them',
      );
    return found;
  }
}
