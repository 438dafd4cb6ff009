import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { SightingRecorder } from '../../agent/report/sightings.js';
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
    // Unchanged: nothing opens or resolves, no event.
    expect(reports.reconcile([facts('mqtt:a'), facts('mqtt:b')], at(2))).toEqual({ opened: [], resolved: [] });
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
