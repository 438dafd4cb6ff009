import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import { SyncRepository } from '../../agent/store/syncRepository.js';
import { EventSender } from '../../agent/sync/eventSender.js';
import type { UpstreamAdapter, UpstreamAnswer } from '../../agent/sync/adapter.js';
import { tempDir } from '../helpers/daemon.js';
import { findingEvent, queueEvents } from '../helpers/reportEvents.js';

/** A receiver that answers what the test says, and keeps the bodies it was sent. */
class ScriptedReceiver implements Pick<UpstreamAdapter, 'postEvents'> {
  readonly bodies: string[] = [];
  constructor(private readonly answer: (events: { eventId: string }[]) => UpstreamAnswer) {}
  postEvents(body: string): Promise<UpstreamAnswer> {
    this.bodies.push(body);
    return Promise.resolve(this.answer((JSON.parse(body) as { events: { eventId: string }[] }).events));
  }
}
const ok = (results: unknown[]): UpstreamAnswer => ({ status: 200, headers: {}, body: JSON.stringify({ results }) });

describe('the events outbox (report_events) and one request of events', () => {
  const tmp = tempDir();
  const { store } = Store.open(
    { path: join(tmp.dir, 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
    pino({ level: 'silent' }),
  );
  const sync = new SyncRepository(store);
  const sender = (r: ScriptedReceiver) => new EventSender({ store, events: sync.events, client: r as unknown as UpstreamAdapter });
  afterAll(() => {
    store.close();
    tmp.cleanup();
  });

  it('sends the stored bodies byte for byte, oldest first, and deletes stored and duplicate, keeps rejected as refused, and a missing one waits', async () => {
    const events = [findingEvent(), findingEvent(), findingEvent(), findingEvent()];
    const bodies = queueEvents(store, events);
    const receiver = new ScriptedReceiver((sent) =>
      ok([
        { eventId: sent[0]!.eventId, status: 'stored' },
        { eventId: sent[1]!.eventId, status: 'duplicate' },
        { eventId: sent[2]!.eventId, status: 'rejected', error: 'finding.kind unknown' },
        { eventId: 'not-sent', status: 'stored' },
      ]),
    );
    const batch = sender(receiver).next(10, 1 << 20)!;
    expect(batch.body).toBe(`{"events":[${bodies.join(',')}]}`);
    const outcome = await sender(receiver).send(batch);
    expect(outcome).toEqual({ kind: 'answered', counts: { stored: 1, duplicate: 1, rejected: 1, refused: 0 }, missing: 1 });
    expect(sync.events.counts()).toEqual({ waiting: 1, refused: 1 });
    expect(sync.events.waiting(10)).toEqual([expect.objectContaining({ eventId: events[3]!.eventId, attempts: 1 })]);
    expect(sync.events.refused()).toEqual([expect.objectContaining({ eventId: events[2]!.eventId, status: 200, error: 'finding.kind unknown' })]);
    // Back in its place, before the one that waited: the queue's order is the order the report queued them in.
    expect(sync.events.retryRefused()).toBe(1);
    expect(sync.events.waiting(10).map((e) => e.eventId)).toEqual([events[2]!.eventId, events[3]!.eventId]);
    for (const e of sync.events.waiting(10)) sync.events.delivered(e.eventId);
  });

  it('keeps a request within batchMaxBytes (one event at least), and narrows a refused request until the event at fault is alone', async () => {
    const events = [findingEvent(), findingEvent(), findingEvent()];
    const bodies = queueEvents(store, events);
    const receiver = new ScriptedReceiver((sent) =>
      sent.length > 1 ? { status: 422, headers: {}, body: '{"error":"no"}' } : { status: 400, headers: {}, body: '{"error":"bad event"}' },
    );
    expect(sender(receiver).next(10, Buffer.byteLength(bodies[0]!) + 20)!.events).toHaveLength(1);
    expect(sender(receiver).next(10, 10)!.events).toHaveLength(1);
    expect(await sender(receiver).send(sender(receiver).next(10, 1 << 20)!)).toMatchObject({ kind: 'narrow' });
    expect(sync.events.counts()).toEqual({ waiting: 3, refused: 0 });
    expect(await sender(receiver).send(sender(receiver).next(1, 1 << 20)!)).toMatchObject({ kind: 'answered', counts: { refused: 1 } });
    expect(sync.events.refused(1)[0]).toMatchObject({ eventId: events[0]!.eventId, status: 400, error: '{"error":"bad event"}' });
  });

  it('tells a receiver without the route (404), a busy one (Retry-After) and an answer that is not the contract apart', async () => {
    const answers: UpstreamAnswer[] = [
      { status: 404, headers: {}, body: '{"error":"no such route"}' },
      { status: 429, headers: { 'retry-after': '7' }, body: '' },
      { status: 200, headers: {}, body: '{"stored":true}' },
      { status: 502, headers: {}, body: 'bad gateway' },
    ];
    const receiver = new ScriptedReceiver(() => answers.shift()!);
    const next = () => sender(receiver).next(10, 1 << 20)!;
    expect(await sender(receiver).send(next())).toMatchObject({ kind: 'unknown-route' });
    expect(await sender(receiver).send(next())).toMatchObject({ kind: 'throttled', retryAfterMs: 7_000 });
    expect(await sender(receiver).send(next())).toMatchObject({ kind: 'failed', message: expect.stringContaining('not the contract') });
    expect(await sender(receiver).send(next())).toMatchObject({ kind: 'failed', unreachable: false });
    expect(sync.events.counts().waiting).toBe(2);
  });

  it("reads a device's configuration for its record: null without a row or with status none", () => {
    const devices = new DeviceRepository(store);
    const now = new Date().toISOString();
    store.transaction(() => {
      for (const name of ['a', 'b', 'c']) devices.apply({ protocol: 'mqtt', name, to: 'discovered', cause: 'test', actor: 'test' });
      const row = store.statement('INSERT INTO device_config (device_id, profile, desired_version, status, updated_at) VALUES (?, ?, ?, ?, ?)');
      row.run('mqtt:a', 'vib', 3, 'pending', now);
      row.run('mqtt:b', null, null, 'none', now);
    });
    const byId = new Map(sync.awaitingSync(10).map((d) => [d.device.id, d.configuration]));
    expect(byId.get('mqtt:a')).toEqual({ profile: 'vib', version: 3, status: 'pending' });
    expect(byId.get('mqtt:b')).toBeNull();
    expect(byId.get('mqtt:c')).toBeNull();
  });
});
