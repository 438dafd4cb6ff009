import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../../agent/store/database.js';
import { DeviceRepository } from '../../../agent/store/deviceRepository.js';
import { SyncRepository } from '../../../agent/store/syncRepository.js';
import type { SyncStatus } from '../../../agent/sync/syncStatus.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { receiverPki, startReceiver, type Receiver } from '../../helpers/receiver.js';
import { findingEvent, queueEvents } from '../../helpers/reportEvents.js';

const GATEWAY = 'gw-events';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `find` until it returns something, or fails after `timeoutMs` saying `what` (and what it saw last). */
async function until<T>(what: string, find: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await find();
    if (found !== undefined && found !== false) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe('upstream events (report findings) to the reference receiver (real daemon, HTTPS, SQLite on both sides)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let pki: Awaited<ReturnType<typeof receiverPki>>;
  let receiver: Receiver;
  let port: number;
  let daemon: Daemon;
  let config: string;
  let store: Store;
  let devices: DeviceRepository;
  let sync: SyncRepository;
  let base: string;
  const cli = async <T>(...args: string[]) => {
    const r = await runCli([...args, '--config', config, '--json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  const restartReceiver = async (args: string[] = []) => {
    await receiver.stop();
    receiver = await startReceiver({
      db: join(tmp.dir, 'cmms.db'),
      cert: pki.cert,
      key: pki.key,
      port,
      args: ['--token-file', join(tmp.dir, 'token'), ...args],
    });
  };
  /** Until no event waits in the outbox (delivered, or refused). */
  const drained = () => until('the events outbox to drain', () => sync.events.counts().waiting === 0);
  const change = (i: number, firmware: string) =>
    store.transaction(() =>
      devices.apply({
        protocol: 'mqtt',
        name: `dev-${i}`,
        to: 'discovered',
        cause: 'test',
        actor: 'test',
        patch: { nameplate: { firmwareVersion: firmware } },
      }),
    );

  beforeAll(async () => {
    tmp = tempDir();
    pki = await receiverPki(tmp.dir);
    writeFileSync(join(tmp.dir, 'token'), 'cmms-token-1\n', { mode: 0o600 });
    receiver = await startReceiver({ db: join(tmp.dir, 'cmms.db'), cert: pki.cert, key: pki.key, args: ['--token-file', join(tmp.dir, 'token')] });
    port = receiver.port;
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        `  id: ${GATEWAY}`,
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        '  enabled: false',
        'sync:',
        '  enabled: true',
        `  baseUrl: https://127.0.0.1:${port}`,
        `  caFile: ${pki.ca}`,
        `  tokenFile: ${join(tmp.dir, 'token')}`,
        '  batchSize: 4',
        '  idleMs: 100',
        '  retryInitialMs: 100',
        '  retryMaxMs: 1000',
        '  reconcileIntervalMs: 0',
        '  timeoutMs: 5000',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    base = await daemon.ready();
    ({ store } = Store.open(
      { path: join(tmp.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 10_000, journalSizeLimitBytes: 1 << 26, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    ));
    devices = new DeviceRepository(store);
    sync = new SyncRepository(store);
    for (let i = 0; i < 3; i++) change(i, 'fw-1');
  }, 120_000);

  afterAll(async () => {
    store?.close();
    await daemon?.dispose();
    await receiver?.stop();
    tmp?.cleanup();
  });

  it('delivers queued events, bodies as stored and in order, and they leave the outbox', async () => {
    const events = Array.from({ length: 10 }, () => findingEvent());
    queueEvents(store, events);
    await drained();
    // Batches of sync.batchSize (4): three requests, each answered stored.
    const held = receiver.events(GATEWAY);
    expect(held.map((e) => e.eventId)).toEqual(events.map((e) => e.eventId));
    expect(held.map((e) => e.event)).toEqual(events);
    expect(sync.events.counts()).toEqual({ waiting: 0, refused: 0 });
    const status = await cli<SyncStatus>('sync', 'status');
    expect(status.events).toEqual({ waiting: 0, refused: 0 });
    expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/^edge_agent_sync_events_total\{status="stored"\} 10$/m);
  }, 60_000);

  it('keeps events while the receiver is down and delivers each once, in order, when it is back', async () => {
    await receiver.stop();
    const events = Array.from({ length: 9 }, () => findingEvent());
    queueEvents(store, events);
    // The agent tried while the receiver was down, and keeps them.
    await until('an attempt at the events while the receiver is down', () => sync.events.waiting(100).some((e) => e.attempts > 0));
    const down = await cli<SyncStatus>('sync', 'status');
    expect(down.events.waiting).toBe(9);
    expect(down.events.lastError).toMatch(/ECONNREFUSED|connect/);
    await restartReceiver();
    await drained();
    const ids = events.map((e) => e.eventId);
    const held = receiver.events(GATEWAY).filter((e) => ids.includes(e.eventId));
    expect(held.map((e) => e.eventId)).toEqual(ids);
    // Each answered once, stored.
    const answers = receiver.eventResults(GATEWAY).filter((r) => ids.includes(r.event_id));
    expect(answers.map((r) => r.event_id)).toEqual(ids);
    expect(new Set(answers.map((r) => r.status))).toEqual(new Set(['stored']));
    await until('the events error to clear', async () => (await cli<SyncStatus>('sync', 'status')).events.lastError === undefined);
  }, 90_000);

  it('answers a resend of a stored eventId duplicate, stores it once, and the agent lets it go', async () => {
    const [first] = receiver.events(GATEWAY);
    // As after a crash between the receiver storing it and the agent deleting it: the same event queued again.
    queueEvents(store, [first!.event as never]);
    await drained();
    expect(receiver.events(GATEWAY).filter((e) => e.eventId === first!.eventId)).toHaveLength(1);
    expect(
      receiver
        .eventResults(GATEWAY)
        .filter((r) => r.event_id === first!.eventId)
        .map((r) => r.status),
    ).toEqual(['stored', 'duplicate']);
    expect(sync.events.counts()).toEqual({ waiting: 0, refused: 0 });
  }, 60_000);

  it('keeps a rejected event as refused, shown by sync status, while the events after it are delivered', async () => {
    const bad = findingEvent({ kind: 'made_up_kind' });
    const good = findingEvent({ kind: 'expiring' });
    queueEvents(store, [bad, good]);
    await drained();
    expect(receiver.events(GATEWAY).map((e) => e.eventId)).toContain(good.eventId);
    expect(receiver.events(GATEWAY).map((e) => e.eventId)).not.toContain(bad.eventId);
    expect(sync.events.counts()).toEqual({ waiting: 0, refused: 1 });
    const status = await cli<SyncStatus>('sync', 'status');
    expect(status.events).toMatchObject({
      waiting: 0,
      refused: 1,
      lastRefused: { eventId: bad.eventId, type: 'finding.opened', status: 200, error: expect.stringContaining('finding.kind must be one of') },
    });
    const text = (await runCli(['sync', 'status', '--config', config])).stdout;
    expect(text).toMatch(/^ {2}events: 0 waiting, 1 refused$/m);
    expect(text).toContain(`last refused event: ${bad.eventId}`);
    await until('the refused gauge', async () => /^edge_agent_sync_events_refused 1$/m.test(await (await fetch(`${base}/metrics`)).text()));
    // A technician sends it again (after the receiver is fixed, say): here it is refused again, and stays refused.
    expect(await cli<{ requeued: number; events?: number }>('sync', 'retry-dead-letters')).toEqual({ requeued: 0, events: 1 });
    await until('the event refused a second time', () => receiver.eventResults(GATEWAY).filter((r) => r.event_id === bad.eventId).length === 2);
    await until('the event refused again', () => sync.events.counts().refused === 1);
  }, 60_000);

  it('leaves events waiting at a receiver without the events route (404), says so once, and the devices still flow', async () => {
    await restartReceiver(['--no-events']);
    const from = daemon.logs.length;
    const events = Array.from({ length: 3 }, () => findingEvent({ kind: 'shadow.unenrolled_client', deviceId: null }));
    queueEvents(store, events);
    await until('sync status to say the route is unknown', async () => (await cli<SyncStatus>('sync', 'status')).events.unknownRoute);
    // The devices go on: a change made now reaches the receiver.
    change(1, 'fw-2');
    const revision = sync.revisions().get('mqtt:dev-1')!;
    await until('the device change at the receiver', () => receiver.holdings(GATEWAY).get('mqtt:dev-1') === revision);
    // Asked again every sync.retryMaxMs (1 s here): several 404s, one warning.
    await until('three 404s', () => sync.events.waiting(10).some((e) => e.attempts >= 3), 60_000);
    const warnings = daemon.logs.slice(from).filter((l) => l.msg.startsWith('the receiver does not know the events route (404)'));
    expect(warnings).toHaveLength(1);
    expect(sync.events.counts()).toEqual({ waiting: 3, refused: 1 });
    const text = (await runCli(['sync', 'status', '--config', config])).stdout;
    expect(text).toMatch(/^ {2}EVENTS WAIT: the receiver does not know POST \.\.\.\/events:batch: 404/m);
    // Upgraded: the events go, and the note clears.
    await restartReceiver();
    await drained();
    const ids = events.map((e) => e.eventId);
    expect(
      receiver
        .events(GATEWAY)
        .filter((e) => ids.includes(e.eventId))
        .map((e) => e.eventId),
    ).toEqual(ids);
    await until('the route note to clear', async () => (await cli<SyncStatus>('sync', 'status')).events.unknownRoute === undefined);
    await daemon.waitForLog((l) => l.msg === 'the receiver takes events now: sending the ones that waited', 10_000, from);
  }, 120_000);

  it("sends the device's configuration in its record", async () => {
    const deviceId = 'mqtt:dev-2';
    store.transaction(() => {
      store
        .statement("INSERT INTO device_config (device_id, profile, desired_version, status, updated_at) VALUES (?, 'vib', 2, 'in_sync', ?)")
        .run(deviceId, new Date().toISOString());
      devices.apply({ protocol: 'mqtt', name: 'dev-2', to: 'discovered', cause: 'test', actor: 'test', patch: { nameplate: { firmwareVersion: 'fw-3' } } });
    });
    const revision = sync.revisions().get(deviceId)!;
    await until('the configured device at the receiver', () => receiver.holdings(GATEWAY).get(deviceId) === revision);
    const record = (id: string) => receiver.records(GATEWAY).get(id) as { configuration: unknown };
    expect(record(deviceId).configuration).toEqual({ profile: 'vib', version: 2, status: 'in_sync' });
    expect(record('mqtt:dev-0').configuration).toBeNull();
  }, 60_000);
});
