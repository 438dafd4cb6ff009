import { join } from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { defaultReportConfig } from '../../agent/config/reportSchema.js';
import { OPEN_PER_KIND, OVERFLOW_SUBJECT } from '../../agent/report/evaluator.js';
import { ReportService } from '../../agent/report/reportService.js';
import { SightingRecorder, SUBJECTS_PER_ADDRESS } from '../../agent/report/sightings.js';
import type { FindingFacts } from '../../agent/report/types.js';
import { Store } from '../../agent/store/database.js';
import { ReportRepository } from '../../agent/store/reportRepository.js';
import { tempDir } from '../helpers/daemon.js';

describe('the report on SQLite: sightings coalesced, findings opened and resolved with their events', () => {
  const tmp = tempDir();
  const { store } = Store.open(
    { path: join(tmp.dir, 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
    pino({ level: 'silent' }),
  );
  const reports = new ReportRepository(store);
  afterAll(() => {
    store.close();
    tmp.cleanup();
  });
  const recorder = (writes: number[], maxPending?: number) =>
    new SightingRecorder({
      log: pino({ level: 'silent' }),
      reports: { addSightings: (batch) => (writes.push(batch.length), reports.addSightings(batch)) },
      certificates: { get: () => undefined, current: () => undefined },
      devices: { byName: () => undefined },
      ...(maxPending !== undefined ? { maxPending } : {}),
    });

  it('writes a flood of announcements from one client as one row, counted, in one write per flush', () => {
    const writes: number[] = [];
    const r = recorder(writes);
    for (let i = 0; i < 1_000; i++) r.uncertifiedAnnouncement({ clientId: 'node-1', remoteAddress: '10.0.0.9', topic: `spBv1.0/g/NDATA/node-1`, bytes: i });
    r.flush();
    for (let i = 0; i < 500; i++) r.uncertifiedAnnouncement({ clientId: 'node-1', remoteAddress: '10.0.0.9', topic: `spBv1.0/g/NDATA/node-1`, bytes: i });
    r.flush();
    r.flush();
    expect(writes).toEqual([1, 1]);
    const [row] = reports.sightingsSince(new Date(0)).filter((s) => s.subject === 'mqtt:node-1');
    expect(row).toMatchObject({ kind: 'shadow.uncertified_announcement', count: 1_500, evidence: { bytes: 499, remoteAddress: '10.0.0.9' } });
  });

  it('holds at most maxPending new subjects between writes and drops the rest', () => {
    const writes: number[] = [];
    const r = recorder(writes, 10);
    for (let i = 0; i < 25; i++) r.unenrolledClient({ clientId: `scan-${i}`, remoteAddress: '10.0.0.8', stayedMs: 5, left: true });
    r.flush();
    expect(writes).toEqual([10]);
  });

  it('opens what is new and resolves what is gone, each with its report_events row in the same commit', () => {
    const at = (n: number) => new Date(Date.UTC(2026, 0, 1, 0, n));
    const facts = (subject: string): FindingFacts => ({
      kind: 'stale',
      subject,
      deviceId: subject,
      summary: `${subject} not seen`,
      evidence: { lastSeen: at(0).toISOString() },
      firstSeen: at(0),
      lastSeen: at(0),
    });
    const first = reports.reconcile([facts('mqtt:a'), facts('mqtt:b')], at(1));
    expect(first.opened.map((f) => f.subject)).toEqual(['mqtt:a', 'mqtt:b']);
    // Unchanged: nothing opens, resolves or is updated, no event.
    expect(reports.reconcile([facts('mqtt:a'), facts('mqtt:b')], at(2))).toEqual({ opened: [], resolved: [], updated: 0 });
    const second = reports.reconcile([facts('mqtt:b'), facts('mqtt:c')], at(3));
    expect(second.opened.map((f) => f.subject)).toEqual(['mqtt:c']);
    expect(second.resolved.map((f) => f.subject)).toEqual(['mqtt:a']);
    expect(reports.open().map((f) => f.subject)).toEqual(['mqtt:b', 'mqtt:c']);
    const events = reports.events().map((e) => ({ ...e, body: JSON.parse(e.body) as Record<string, unknown> }));
    expect(events.map((e) => `${e.type} ${(e.body.finding as { subject: string }).subject}`)).toEqual([
      'finding.opened mqtt:a',
      'finding.opened mqtt:b',
      'finding.opened mqtt:c',
      'finding.resolved mqtt:a',
    ]);
    for (const e of events) expect(e.body).toMatchObject({ eventId: e.eventId, type: e.type, occurredAt: expect.any(String) });
    expect(events[3]!.body).toMatchObject({ occurredAt: at(3).toISOString(), finding: { kind: 'stale', deviceId: 'mqtt:a', summary: 'mqtt:a not seen' } });
    // Open again after resolving: a new finding (a new id), not the old one reopened.
    const again = reports.reconcile([facts('mqtt:a'), facts('mqtt:b'), facts('mqtt:c')], at(4));
    expect(again.opened[0]!.id).not.toBe(first.opened[0]!.id);
    expect(reports.countOpenByKind()).toEqual({ stale: 3 });
  });
  it('queues no events while the upstream sync is off, and deletes findings resolved long ago', () => {
    const at = (n: number) => new Date(Date.UTC(2026, 5, 1, 0, n));
    const facts = (subject: string): FindingFacts => ({
      kind: 'expiring',
      subject,
      deviceId: null,
      summary: `${subject} ends soon`,
      evidence: {},
      firstSeen: at(0),
      lastSeen: at(0),
    });
    const before = reports.events().length;
    const opened = reports.reconcile([facts('serial-1')], at(1), { events: false });
    expect(opened.opened).toHaveLength(1);
    // The evaluation that no longer finds it resolves it (and the test above's open ones), without events.
    reports.reconcile([], at(2), { events: false });
    expect(reports.events()).toHaveLength(before);
    expect(reports.open()).toEqual([]);
    // The findings the test above resolved in January go; the one resolved at at(2) is not older than at(2) and stays.
    expect(reports.pruneResolved(at(2))).toBe(4);
    expect(reports.pruneResolved(at(3))).toBe(1);
    expect(reports.pruneResolved(at(3))).toBe(0);
  });
});

/** A database of its own, the repository and the SQLite connection's count of rows changed since it opened. */
function openStore() {
  const tmp = tempDir();
  const { store } = Store.open(
    { path: join(tmp.dir, 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
    pino({ level: 'silent' }),
  );
  const changes = () => (store.statement('SELECT total_changes() AS n').get() as { n: number }).n;
  return {
    store,
    reports: new ReportRepository(store),
    changes,
    close: () => {
      store.close();
      tmp.cleanup();
    },
  };
}

const recorderOf = (reports: ReportRepository, options: { perAddress?: number } = {}) =>
  new SightingRecorder({
    log: pino({ level: 'silent' }),
    reports,
    certificates: { get: () => undefined, current: () => undefined },
    devices: { byName: () => undefined },
    ...options,
  });

const serviceOf = (reports: ReportRepository, sightings: SightingRecorder, upstream: { on: boolean }) =>
  new ReportService({
    log: pino({ level: 'silent' }),
    config: defaultReportConfig(),
    reports,
    devices: { slice: () => [] },
    certificates: { list: () => [] },
    sightings,
    registry: new Registry(),
    upstream: () => upstream.on,
  });

describe('the report on SQLite: a flood of client ids is folded per address, open findings are capped per kind', () => {
  const db = openStore();
  afterAll(() => db.close());
  const subjects = (kind: string) =>
    db.reports
      .sightingsSince(new Date(0))
      .filter((s) => s.kind === kind)
      .map((s) => s.subject);

  it(`records at most ${SUBJECTS_PER_ADDRESS} client ids per address and kind, and folds the others into mqtt:@<address>`, () => {
    const r = recorderOf(db.reports);
    r.start();
    for (let i = 0; i < 5_000; i++) r.unenrolledClient({ clientId: `flood-${i}`, remoteAddress: '10.0.0.66', stayedMs: 5, left: true });
    // The same address announcing under new ids: another kind, its own allowance.
    for (let i = 0; i < 300; i++) r.uncertifiedAnnouncement({ clientId: `node-${i}`, remoteAddress: '10.0.0.66', topic: 'spBv1.0/g/NBIRTH/x', bytes: 3 });
    // Another address keeps its own allowance.
    for (let i = 0; i < 3; i++) r.unenrolledClient({ clientId: `other-${i}`, remoteAddress: '10.0.0.67', stayedMs: 5, left: true });
    // An id the address has already is counted under its own subject, not folded.
    r.unenrolledClient({ clientId: 'flood-0', remoteAddress: '10.0.0.66', stayedMs: 5, left: true });
    r.stop();

    const unenrolled = subjects('shadow.unenrolled_client');
    expect(unenrolled.filter((s) => s.startsWith('mqtt:flood-'))).toHaveLength(SUBJECTS_PER_ADDRESS);
    expect(unenrolled.filter((s) => s.startsWith('mqtt:other-'))).toHaveLength(3);
    expect(unenrolled).toContain('mqtt:@10.0.0.66');
    expect(unenrolled).toHaveLength(SUBJECTS_PER_ADDRESS + 3 + 1);
    const all = db.reports.sightingsSince(new Date(0));
    const folded = all.find((s) => s.kind === 'shadow.unenrolled_client' && s.subject === 'mqtt:@10.0.0.66');
    expect(folded).toMatchObject({ count: 5_000 - SUBJECTS_PER_ADDRESS, evidence: { folded: 5_000 - SUBJECTS_PER_ADDRESS, remoteAddress: '10.0.0.66' } });
    expect(all.find((s) => s.subject === 'mqtt:flood-0' && s.kind === 'shadow.unenrolled_client')?.count).toBe(2);
    const announced = subjects('shadow.uncertified_announcement');
    expect(announced).toHaveLength(SUBJECTS_PER_ADDRESS + 1);
    expect(all.find((s) => s.kind === 'shadow.uncertified_announcement' && s.subject === 'mqtt:@10.0.0.66')?.evidence.folded).toBe(300 - SUBJECTS_PER_ADDRESS);
  });

  it('remembers across a restart which client ids an address has within the window, and the folded count', () => {
    const r = recorderOf(db.reports);
    r.start();
    for (let i = 0; i < 10; i++) r.unenrolledClient({ clientId: `after-restart-${i}`, remoteAddress: '10.0.0.66', stayedMs: 5, left: true });
    r.unenrolledClient({ clientId: 'flood-1', remoteAddress: '10.0.0.66', stayedMs: 5, left: true });
    r.stop();
    const all = db.reports.sightingsSince(new Date(0));
    expect(all.filter((s) => s.subject.startsWith('mqtt:after-restart-'))).toEqual([]);
    expect(all.find((s) => s.kind === 'shadow.unenrolled_client' && s.subject === 'mqtt:@10.0.0.66')?.evidence.folded).toBe(5_000 - SUBJECTS_PER_ADDRESS + 10);
    expect(all.find((s) => s.subject === 'mqtt:flood-1')?.count).toBe(2);
  });

  it('gives an address its allowance again for client ids last seen before the sighting window', () => {
    const r = recorderOf(db.reports, { perAddress: 2 });
    r.setWindow(1);
    r.start();
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      const t0 = Date.now();
      for (const id of ['w-1', 'w-2', 'w-3']) r.unenrolledClient({ clientId: id, remoteAddress: '10.0.0.70', stayedMs: 5, left: true });
      vi.setSystemTime(t0 + 2 * 86_400_000);
      r.unenrolledClient({ clientId: 'w-4', remoteAddress: '10.0.0.70', stayedMs: 5, left: true });
    } finally {
      vi.useRealTimers();
    }
    r.stop();
    const mine = db.reports.sightingsSince(new Date(0)).filter((s) => s.evidence.remoteAddress === '10.0.0.70');
    expect(mine.map((s) => s.subject).sort()).toEqual(['mqtt:@10.0.0.70', 'mqtt:w-1', 'mqtt:w-2', 'mqtt:w-4']);
  });

  it(`opens at most ${OPEN_PER_KIND} findings of a kind and one more that says how many are not listed, stable from one evaluation to the next`, () => {
    const r = recorderOf(db.reports);
    // Every client from an address of its own: the per-address fold does not bound them, the per-kind cap does.
    for (let i = 0; i < 2_500; i++)
      r.uncertifiedAnnouncement({ clientId: `spread-${i}`, remoteAddress: `10.1.${i >> 8}.${i & 255}`, topic: 'homie/x', bytes: 1 });
    r.flush();
    const upstream = { on: true };
    const service = serviceOf(db.reports, r, upstream);
    const before = db.reports.events(100_000).length;
    service.evaluate();
    const open = db.reports.open('shadow.uncertified_announcement');
    expect(open).toHaveLength(OPEN_PER_KIND + 1);
    const more = open.find((f) => f.subject === OVERFLOW_SUBJECT);
    const total = new Set(
      db.reports
        .sightingsSince(new Date(0))
        .filter((s) => s.kind === 'shadow.uncertified_announcement')
        .map((s) => s.subject),
    ).size;
    expect(more).toMatchObject({ deviceId: null, evidence: { more: total - OPEN_PER_KIND, limit: OPEN_PER_KIND } });
    expect(more!.summary).toContain(`${total - OPEN_PER_KIND} more shadow.uncertified_announcement findings`);
    // One event per opening, the overflow included, not one per client.
    expect(db.reports.events(100_000).length - before).toBe(db.reports.open().length);
    // The next evaluation keeps the same ones open: nothing opens or resolves.
    const kept = open.map((f) => f.id).sort();
    const events = db.reports.events(100_000).length;
    service.evaluate();
    expect(
      db.reports
        .open('shadow.uncertified_announcement')
        .map((f) => f.id)
        .sort(),
    ).toEqual(kept);
    expect(db.reports.events(100_000)).toHaveLength(events);
  });
});

describe('the report on SQLite: an evaluation writes only what changed, durably only with events', () => {
  const db = openStore();
  afterAll(() => db.close());
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  it('writes nothing, and commits no transaction, when a viewer asks for the report and nothing changed', () => {
    const r = recorderOf(db.reports);
    const upstream = { on: true };
    const service = serviceOf(db.reports, r, upstream);
    r.unenrolledClient({ clientId: 'quiet-1', remoteAddress: '10.0.0.5', stayedMs: 5, left: true });
    r.unenrolledClient({ clientId: 'quiet-2', remoteAddress: '10.0.0.5', stayedMs: 5, left: true });
    service.evaluate({ prune: true });
    expect(db.reports.open().map((f) => f.subject)).toEqual(['mqtt:quiet-1', 'mqtt:quiet-2']);

    const durable = vi.spyOn(db.store, 'durable');
    const transaction = vi.spyOn(db.store, 'transaction');
    const changes = db.changes();
    vi.useFakeTimers({ toFake: ['Date'] });
    // Later than the reuse of a fresh evaluation: these evaluate again.
    vi.setSystemTime(Date.now() + 5_000);
    service.evaluate();
    vi.setSystemTime(Date.now() + 5_000);
    expect(service.view().findings).toHaveLength(2);
    expect(db.changes()).toBe(changes);
    expect(durable).not.toHaveBeenCalled();
    expect(transaction).not.toHaveBeenCalled();
  });

  it('updates a finding whose facts changed without an fsync, and opens a new one durably with its event', () => {
    const r = recorderOf(db.reports);
    const upstream = { on: true };
    const service = serviceOf(db.reports, r, upstream);
    const durable = vi.spyOn(db.store, 'durable');
    const transaction = vi.spyOn(db.store, 'transaction');
    const events = db.reports.events().length;

    // quiet-1 again: its count and last seen change, nothing opens.
    r.unenrolledClient({ clientId: 'quiet-1', remoteAddress: '10.0.0.5', stayedMs: 5, left: true });
    let changes = db.changes();
    service.evaluate();
    // The sighting's upsert (the recorder's flush) and the finding's update.
    expect(db.changes() - changes).toBe(2);
    expect(db.reports.open().find((f) => f.subject === 'mqtt:quiet-1')?.evidence.count).toBe(2);
    expect(durable).not.toHaveBeenCalled();
    expect(transaction).toHaveBeenCalledTimes(2);
    expect(db.reports.events()).toHaveLength(events);

    // A new client: an opening, its event, one durable transaction.
    r.unenrolledClient({ clientId: 'quiet-3', remoteAddress: '10.0.0.5', stayedMs: 5, left: true });
    service.evaluate();
    expect(durable).toHaveBeenCalledTimes(1);
    expect(db.reports.events()).toHaveLength(events + 1);

    // With the sync off an opening queues no event, and needs no fsync.
    upstream.on = false;
    r.unenrolledClient({ clientId: 'quiet-4', remoteAddress: '10.0.0.5', stayedMs: 5, left: true });
    changes = db.changes();
    service.evaluate();
    expect(db.changes() - changes).toBe(2);
    expect(durable).toHaveBeenCalledTimes(1);
    expect(db.reports.events()).toHaveLength(events + 1);
    expect(db.reports.open().map((f) => f.subject)).toEqual(['mqtt:quiet-1', 'mqtt:quiet-2', 'mqtt:quiet-3', 'mqtt:quiet-4']);
  });
});
