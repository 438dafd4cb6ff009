import { randomUUID } from 'node:crypto';
import type { Finding, FindingFacts, FindingKind, Sighting, SightingKind } from '../report/types.js';
import type { Store } from './database.js';

interface SightingRow {
  kind: SightingKind;
  protocol: 'mqtt' | 'opcua';
  subject: string;
  evidence: string;
  first_seen: string;
  last_seen: string;
  count: number;
}

interface FindingRow {
  id: number;
  kind: FindingKind;
  subject: string;
  device_id: string | null;
  summary: string;
  evidence: string;
  first_seen: string;
  last_seen: string;
  opened_at: string;
  resolved_at: string | null;
}

const toFinding = (r: FindingRow): Finding => ({
  id: r.id,
  kind: r.kind,
  subject: r.subject,
  deviceId: r.device_id,
  summary: r.summary,
  evidence: JSON.parse(r.evidence) as Record<string, unknown>,
  firstSeen: new Date(r.first_seen),
  lastSeen: new Date(r.last_seen),
  openedAt: new Date(r.opened_at),
  resolvedAt: r.resolved_at === null ? null : new Date(r.resolved_at),
});

/** The upstream event of a finding, as report_events.body holds it (docs/upstream-api.md). */
export function findingEvent(type: 'finding.opened' | 'finding.resolved', f: Finding, at: Date): { eventId: string; body: string } {
  const eventId = randomUUID();
  const finding = {
    id: f.id,
    kind: f.kind,
    subject: f.subject,
    deviceId: f.deviceId,
    summary: f.summary,
    evidence: f.evidence,
    firstSeen: f.firstSeen.toISOString(),
    lastSeen: f.lastSeen.toISOString(),
  };
  return { eventId, body: JSON.stringify({ eventId, type, occurredAt: at.toISOString(), finding }) };
}

/** A finding's kind and subject as one key (at most one open finding per key; agent/report/evaluator.ts joins them alike). */
const key = (kind: string, subject: string) => `${kind}\u0000${subject}`;

/**
 * The report's tables (migration 0014): sightings (upserted in batches by
 * the recorder), findings (opened and resolved by the evaluation), and the
 * INSERTs into report_events, the outbox the upstream sender empties.
 */
export class ReportRepository {
  constructor(private readonly store: Store) {}

  /** Adds a batch of coalesced sightings in one transaction: counts add up, last seen and evidence move on. */
  addSightings(batch: readonly Sighting[]): void {
    if (batch.length === 0) return;
    const upsert = this.store.statement(
      `INSERT INTO sightings (kind, protocol, subject, evidence, first_seen, last_seen, count) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (kind, subject) DO UPDATE SET evidence = excluded.evidence, count = count + excluded.count,
         last_seen = max(last_seen, excluded.last_seen), first_seen = min(first_seen, excluded.first_seen)`,
    );
    this.store.transaction(() => {
      for (const s of batch)
        upsert.run(s.kind, s.protocol, s.subject, JSON.stringify(s.evidence), s.firstSeen.toISOString(), s.lastSeen.toISOString(), s.count);
    });
  }

  /** Sightings last seen at or after `since`. */
  sightingsSince(since: Date): Sighting[] {
    const rows = this.store.statement('SELECT * FROM sightings WHERE last_seen >= ? ORDER BY kind, subject').all(since.toISOString()) as SightingRow[];
    return rows.map((r) => ({
      kind: r.kind,
      protocol: r.protocol,
      subject: r.subject,
      evidence: JSON.parse(r.evidence) as Record<string, unknown>,
      firstSeen: new Date(r.first_seen),
      lastSeen: new Date(r.last_seen),
      count: r.count,
    }));
  }

  /** Deletes findings resolved before `before`. */
  pruneResolved(before: Date): number {
    return this.store.statement('DELETE FROM findings WHERE resolved_at IS NOT NULL AND resolved_at < ?').run(before.toISOString()).changes;
  }

  /** Forgets sightings last seen before `before` (their findings have resolved by then). */
  pruneSightings(before: Date): number {
    return this.store.statement('DELETE FROM sightings WHERE last_seen < ?').run(before.toISOString()).changes;
  }

  /** The kind and subject of every open finding, as `key()` joins them (the per-kind cap keeps these first). */
  openKeys(): Set<string> {
    const rows = this.store.statement('SELECT kind, subject FROM findings WHERE resolved_at IS NULL').all() as { kind: string; subject: string }[];
    return new Set(rows.map((r) => key(r.kind, r.subject)));
  }

  open(kind?: FindingKind): Finding[] {
    const rows = this.store
      .statement('SELECT * FROM findings WHERE resolved_at IS NULL AND (@kind IS NULL OR kind = @kind) ORDER BY kind, subject')
      .all({ kind: kind ?? null }) as FindingRow[];
    return rows.map(toFinding);
  }

  countOpenByKind(): Record<string, number> {
    const rows = this.store.statement('SELECT kind, count(*) AS n FROM findings WHERE resolved_at IS NULL GROUP BY kind').all() as {
      kind: string;
      n: number;
    }[];
    return Object.fromEntries(rows.map((r) => [r.kind, r.n]));
  }

  /**
   * Makes the open findings what an evaluation found. It compares first,
   * outside any transaction: a new one is to be inserted (opened), one no
   * longer found resolved, one still found updated only if its facts
   * (device, summary, evidence, first and last seen) changed. Nothing to do:
   * nothing is written. Otherwise one transaction writes it, with each
   * opening's and resolution's upstream event in report_events (unless
   * `events` is false: the upstream sync is off); it is durable (fsynced)
   * only when it writes events, the others at the connection's normal
   * durability (the next evaluation finds the same again). Returns what
   * opened, what resolved and how many were updated.
   */
  reconcile(
    found: readonly FindingFacts[],
    at: Date,
    options: { events: boolean } = { events: true },
  ): { opened: Finding[]; resolved: Finding[]; updated: number } {
    const now = at.toISOString();
    // One process writes findings (this one, synchronously): what is read here is what the transaction below changes.
    const rows = this.store.statement('SELECT * FROM findings WHERE resolved_at IS NULL ORDER BY kind, subject').all() as FindingRow[];
    const open = new Map(rows.map((r) => [key(r.kind, r.subject), r]));
    const inserts: { facts: FindingFacts; evidence: string }[] = [];
    const updates: { id: number; facts: FindingFacts; evidence: string }[] = [];
    const seen = new Set<string>();
    for (const f of found) {
      const k = key(f.kind, f.subject);
      if (seen.has(k)) continue;
      seen.add(k);
      const evidence = JSON.stringify(f.evidence);
      const existing = open.get(k);
      if (!existing) inserts.push({ facts: f, evidence });
      else if (
        existing.device_id !== f.deviceId ||
        existing.summary !== f.summary ||
        existing.evidence !== evidence ||
        existing.first_seen !== f.firstSeen.toISOString() ||
        existing.last_seen !== f.lastSeen.toISOString()
      )
        updates.push({ id: existing.id, facts: f, evidence });
    }
    const gone = rows.filter((r) => !seen.has(key(r.kind, r.subject)));
    if (inserts.length + updates.length + gone.length === 0) return { opened: [], resolved: [], updated: 0 };
    const events = options.events && inserts.length + gone.length > 0;
    const write = () => {
      const insert = this.store.statement(
        `INSERT INTO findings (kind, subject, device_id, summary, evidence, first_seen, last_seen, opened_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      const update = this.store.statement('UPDATE findings SET device_id = ?, summary = ?, evidence = ?, first_seen = ?, last_seen = ? WHERE id = ?');
      const resolve = this.store.statement('UPDATE findings SET resolved_at = ? WHERE id = ?');
      const event = this.store.statement('INSERT INTO report_events (event_id, type, body, queued_at) VALUES (?, ?, ?, ?)');
      const opened: Finding[] = [];
      const resolved: Finding[] = [];
      for (const { id, facts: f, evidence } of updates) update.run(f.deviceId, f.summary, evidence, f.firstSeen.toISOString(), f.lastSeen.toISOString(), id);
      for (const { facts: f, evidence } of inserts) {
        const id = Number(
          insert.run(f.kind, f.subject, f.deviceId, f.summary, evidence, f.firstSeen.toISOString(), f.lastSeen.toISOString(), now).lastInsertRowid,
        );
        const finding: Finding = { ...f, id, openedAt: at, resolvedAt: null };
        const e = findingEvent('finding.opened', finding, at);
        if (events) event.run(e.eventId, 'finding.opened', e.body, now);
        opened.push(finding);
      }
      for (const r of gone) {
        resolve.run(now, r.id);
        const done: Finding = { ...toFinding(r), resolvedAt: at };
        const e = findingEvent('finding.resolved', done, at);
        if (events) event.run(e.eventId, 'finding.resolved', e.body, now);
        resolved.push(done);
      }
      return { opened, resolved, updated: updates.length };
    };
    return events ? this.store.durable(write) : this.store.transaction(write);
  }

  /** report_events rows, oldest first (tests, the CLI's view of the outbox). */
  events(limit = 1_000): { eventId: string; type: string; body: string; queuedAt: string }[] {
    return (
      this.store.statement('SELECT event_id, type, body, queued_at FROM report_events ORDER BY id LIMIT ?').all(limit) as {
        event_id: string;
        type: string;
        body: string;
        queued_at: string;
      }[]
    ).map((r) => ({ eventId: r.event_id, type: r.type, body: r.body, queuedAt: r.queued_at }));
  }
}
