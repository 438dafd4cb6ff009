import { join } from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defaultConfigurationConfig } from '../../agent/config/configurationSchema.js';
import { ConfigService } from '../../agent/configuration/configService.js';
import { ProfileManager } from '../../agent/configuration/profileManager.js';
import { validateProfile, valuesSha256 } from '../../agent/configuration/profileDocument.js';
import type { ConfigDeliverer, DeliveryOutcome, DesiredConfig } from '../../agent/configuration/types.js';
import { EventBus } from '../../agent/events.js';
import type { Protocol } from '../../agent/inventory/device.js';
import { Store } from '../../agent/store/database.js';
import { LOG_KEEP } from '../../agent/store/configRepository.js';
import { openRepositories, type Repositories } from '../../agent/store/repositories.js';
import { tempDir } from '../helpers/daemon.js';
import { pollUntil } from '../helpers/waiters.js';

const waitFor = (check: () => boolean, timeoutMs: number) =>
  pollUntil(() => (check() ? true : undefined), { timeoutMs, message: () => `not reached in ${timeoutMs} ms: ${check.toString()}` });

const log = pino({ level: 'silent' });

/** A deliverer that records what it is given and answers what the test tells it. */
class RecordingDeliverer implements ConfigDeliverer {
  readonly delivered: DesiredConfig[] = [];
  readonly withdrawn: string[] = [];
  answer: (d: DesiredConfig) => DeliveryOutcome = () => ({ kind: 'published' });
  constructor(readonly protocol: Protocol) {}
  async deliver(d: DesiredConfig): Promise<DeliveryOutcome> {
    this.delivered.push(d);
    return this.answer(d);
  }
  async withdraw(device: { deviceId: string }): Promise<void> {
    this.withdrawn.push(device.deviceId);
  }
}

const vib = (over: Record<string, unknown> = {}) =>
  validateProfile({
    name: 'vib',
    protocol: 'mqtt',
    selector: { manufacturer: 'acme*' },
    schema: { threshold: { type: 'number', minimum: 0 }, mode: { type: 'string', enum: ['rms', 'peak'] } },
    values: { threshold: 4.5, mode: 'rms' },
    ...over,
  });

describe('ConfigService status rules (SQLite on disk)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let path: string;
  let store: Store;
  let repos: Repositories;
  let bus: EventBus;
  let service: ConfigService;
  let manager: ProfileManager;
  let mqtt: RecordingDeliverer;

  const open = () => {
    store = Store.open({ path, busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' }, log).store;
    bus = new EventBus(log);
    repos = openRepositories(store, { deviceChanged: (deviceId) => bus.emit('device.changed', { deviceId }) });
    service = new ConfigService({
      log,
      config: { ...defaultConfigurationConfig(), retryInitialMs: 100, retryMaxMs: 1000 },
      store,
      repos,
      bus,
      registry: new Registry(),
      gateway: () => ({ site: 'plant-1' }),
    });
    manager = new ProfileManager(repos, service);
    mqtt = new RecordingDeliverer('mqtt');
  };
  const provision = (name: string, manufacturer = 'Acme Sensors', state: 'provisioned' | 'pending' = 'provisioned') =>
    store.transaction(() =>
      repos.devices.apply({ protocol: 'mqtt', name, to: state, cause: 'test', actor: 'test', patch: { nameplate: { manufacturer, model: 'V1' } } }),
    );
  const row = (id: string) => repos.configs.get(id);

  beforeEach(() => {
    tmp = tempDir();
    path = join(tmp.dir, 'c.db');
    open();
  });
  afterEach(async () => {
    await service.stop();
    store.close();
    tmp.cleanup();
  });

  it('commits the desired state with a revision bump, then publishes it; a report of that version makes it in sync', async () => {
    const d = provision('s1');
    await service.start();
    service.register(mqtt);
    store.durable(() => manager.apply(vib(), 'alice', false));
    const pending = row('mqtt:s1')!;
    expect(pending).toMatchObject({ profile: 'vib', desiredVersion: 1, status: 'pending' });
    expect(repos.devices.get('mqtt:s1')!.revision).toBeGreaterThan(d.revision);
    await waitFor(() => row('mqtt:s1')?.publishedVersion === 1, 5000);
    expect(mqtt.delivered).toHaveLength(1);
    expect(mqtt.delivered[0]).toMatchObject({
      profile: 'vib',
      version: 1,
      values: { threshold: 4.5, mode: 'rms' },
      sha256: valuesSha256({ threshold: 4.5, mode: 'rms' }),
    });
    expect(row('mqtt:s1')!.status).toBe('pending');
    const sha = mqtt.delivered[0]!.sha256;
    expect(service.reported('mqtt', 's1', { profile: 'vib', version: 1, sha256: sha, status: 'applied' })).toEqual({ accepted: true, status: 'in_sync' });
    expect(row('mqtt:s1')).toMatchObject({ status: 'in_sync', reportedVersion: 1 });
    expect(repos.configs.log('mqtt:s1').map((e) => e.event)).toEqual(['desired', 'published', 'applied']);
  });

  it('a refusal is failed with its reason; a version never sent is refused and changes nothing; an earlier one is logged', async () => {
    provision('s1');
    await service.start();
    service.register(mqtt);
    store.durable(() => manager.apply(vib(), 'alice', false));
    await waitFor(() => row('mqtt:s1')?.publishedVersion === 1, 5000);
    expect(service.reported('mqtt', 's1', { profile: 'vib', version: 7, status: 'applied' })).toMatchObject({
      accepted: false,
      reason: expect.stringMatching(/never sent/),
    });
    expect(service.reported('mqtt', 's1', { profile: 'vib', version: 1, sha256: 'f'.repeat(64), status: 'applied' }).accepted).toBe(false);
    expect(service.reported('mqtt', 'nobody', { profile: 'vib', version: 1, status: 'applied' }).accepted).toBe(false);
    expect(row('mqtt:s1')!.status).toBe('pending');
    expect(service.reported('mqtt', 's1', { profile: 'vib', version: 1, status: 'refused', error: 'threshold too low' })).toEqual({
      accepted: true,
      status: 'failed',
    });
    expect(row('mqtt:s1')).toMatchObject({ status: 'failed', error: 'threshold too low' });
    store.durable(() => manager.apply(vib({ values: { threshold: 6, mode: 'rms' } }), 'alice', false));
    await waitFor(() => row('mqtt:s1')?.publishedVersion === 2, 5000);
    expect(service.reported('mqtt', 's1', { profile: 'vib', version: 1, status: 'applied' })).toMatchObject({ accepted: true, status: 'pending' });
    expect(repos.configs.log('mqtt:s1').at(-1)!.event).toBe('report_of_earlier');
  });

  it('an identical document is unchanged; rollback moves the head and the devices back; withdraw on decommission', async () => {
    provision('s1');
    provision('other', 'Globex');
    await service.start();
    service.register(mqtt);
    expect(store.durable(() => manager.apply(vib(), 'alice', false))).toMatchObject({ outcome: 'created', version: 1 });
    expect(store.durable(() => manager.apply(vib(), 'alice', false))).toMatchObject({ outcome: 'unchanged', version: 1, affected: [] });
    const v2 = store.durable(() => manager.apply(vib({ values: { threshold: 6, mode: 'peak' } }), 'alice', false));
    expect(v2).toMatchObject({ outcome: 'created', version: 2, previous: 1, affected: [{ deviceId: 'mqtt:s1', from: { version: 1 }, to: { version: 2 } }] });
    expect(v2.diff.values).toEqual([
      { key: 'mode', from: 'rms', to: 'peak' },
      { key: 'threshold', from: 4.5, to: 6 },
    ]);
    expect(row('mqtt:other')).toBeUndefined();
    expect(store.durable(() => manager.rollback('vib', 1, 'alice'))).toMatchObject({ from: 2, to: 1, outcome: 'moved' });
    expect(row('mqtt:s1')).toMatchObject({ desiredVersion: 1, status: 'pending' });
    await waitFor(() => row('mqtt:s1')?.publishedVersion === 1, 5000);
    store.transaction(() => repos.devices.apply({ protocol: 'mqtt', name: 's1', to: 'decommissioned', cause: 'test', actor: 'test' }));
    await waitFor(() => mqtt.withdrawn.includes('mqtt:s1'), 5000);
    await waitFor(() => row('mqtt:s1')?.publishedVersion === undefined, 5000);
    expect(row('mqtt:s1')).toMatchObject({ status: 'none' });
  });

  it('only provisioned devices; pinning wins over selectors; labels select; overrides change one device', async () => {
    provision('s1');
    provision('wait', 'Acme', 'pending');
    provision('g1', 'Globex');
    await service.start();
    store.durable(() => manager.apply(vib({ overrides: { 'mqtt:s1': { threshold: 9 } } }), 'alice', false));
    store.durable(() =>
      manager.apply(
        validateProfile({
          name: 'lab',
          protocol: 'mqtt',
          priority: 5,
          selector: { labels: { zone: 'hot*' } },
          schema: { threshold: { type: 'number' } },
          values: { threshold: 1 },
        }),
        'alice',
        false,
      ),
    );
    expect(row('mqtt:wait')).toBeUndefined();
    expect(row('mqtt:s1')!.desiredSha256).toBe(valuesSha256({ threshold: 9, mode: 'rms' }));
    store.durable(() => manager.setLabels('mqtt:s1', { zone: 'HOT-1' }));
    expect(row('mqtt:s1')!.profile).toBe('lab');
    store.durable(() => manager.assign('mqtt:g1', 'vib'));
    expect(row('mqtt:g1')).toMatchObject({ profile: 'vib', pinnedProfile: 'vib' });
    store.durable(() => manager.assign('mqtt:g1', null));
    expect(row('mqtt:g1')).toMatchObject({ status: 'none' });
    expect(() => store.durable(() => manager.assign('mqtt:g1', 'nope'))).toThrow(/no profile nope/);
  });

  it('retries with backoff; a failure for good is failed; after a restart an unpublished row is sent again, same version and sha256', async () => {
    provision('s1');
    await service.start();
    mqtt.answer = () => ({ kind: 'failed', reason: 'broker down', retry: true });
    service.register(mqtt);
    store.durable(() => manager.apply(vib(), 'alice', false));
    await waitFor(() => mqtt.delivered.length >= 4, 5000);
    expect(row('mqtt:s1')).toMatchObject({
      status: 'pending',
      error: 'broker down',
    });
    // A run of retries is one row, its detail the latest attempt.
    const retries = repos.configs.log('mqtt:s1').filter((e) => e.event === 'retry');
    expect(retries).toHaveLength(1);
    expect(Number(/\(attempt (\d+), next try /.exec(retries[0]!.detail ?? '')?.[1])).toBeGreaterThanOrEqual(3);
    // A "crash": the service stops without the row having been published.
    await service.stop();
    store.close();
    open();
    await service.start();
    const again = new RecordingDeliverer('mqtt');
    service.register(again);
    await waitFor(() => again.delivered.length === 1, 5000);
    expect(again.delivered[0]).toMatchObject({ profile: 'vib', version: 1, sha256: valuesSha256({ threshold: 4.5, mode: 'rms' }) });
    await waitFor(() => row('mqtt:s1')?.publishedVersion === 1, 5000);
    // Published rows are not sent again at the next start (the broker keeps, or is given back, the retained message).
    await service.stop();
    store.close();
    open();
    await service.start();
    const third = new RecordingDeliverer('mqtt');
    third.answer = () => ({ kind: 'failed', reason: 'no such node', retry: false });
    service.register(third);
    await new Promise((r) => setTimeout(r, 200));
    expect(third.delivered).toHaveLength(0);
    store.durable(() => manager.apply(vib({ values: { threshold: 1, mode: 'rms' } }), 'alice', false));
    await waitFor(() => row('mqtt:s1')?.status === 'failed', 5000);
    expect(row('mqtt:s1')!.error).toBe('no such node');
  });

  it('OPC UA: verified is in sync; a drift check marks drift, reapplies when the profile says so, and in sync again when equal', async () => {
    store.transaction(() =>
      repos.devices.apply({
        protocol: 'opcua',
        name: 'press-1',
        to: 'provisioned',
        cause: 'test',
        actor: 'test',
        patch: { nameplate: { manufacturer: 'Schuler' } },
      }),
    );
    await service.start();
    const opcua = new RecordingDeliverer('opcua');
    opcua.answer = (d) => ({ kind: 'verified', observed: d.values });
    service.register(opcua);
    const press = (reapplyOnDrift: boolean, speed = 120) =>
      validateProfile({
        name: 'press',
        protocol: 'opcua',
        selector: { manufacturer: 'schuler' },
        schema: { speed: { type: 'integer' } },
        values: { speed },
        nodes: { speed: { nodeId: 'ns=2;s=Speed', dataType: 'UInt16' } },
        reapplyOnDrift,
      });
    store.durable(() => manager.apply(press(false), 'alice', false));
    await waitFor(() => row('opcua:press-1')?.status === 'in_sync', 5000);
    expect(opcua.delivered[0]).toMatchObject({ name: 'press-1', nodes: { speed: { nodeId: 'ns=2;s=Speed', dataType: 'UInt16' } }, reapplyOnDrift: false });
    expect(service.current('opcua')).toMatchObject([{ deviceId: 'opcua:press-1', version: 1, values: { speed: 120 } }]);
    const drift = { observed: { speed: 99 }, differences: [{ key: 'speed', nodeId: 'ns=2;s=Speed', expected: 120, actual: 99 }] };
    service.observed('opcua:press-1', drift);
    expect(row('opcua:press-1')).toMatchObject({ status: 'drifted', error: 'speed: expected 120, read 99' });
    expect(opcua.delivered).toHaveLength(1);
    service.observed('opcua:press-1', { observed: { speed: 120 }, differences: [] });
    expect(row('opcua:press-1')).toMatchObject({ status: 'in_sync' });
    store.durable(() => manager.apply(press(true, 130), 'alice', false));
    await waitFor(() => row('opcua:press-1')?.status === 'in_sync' && row('opcua:press-1')?.desiredVersion === 2, 5000);
    service.observed('opcua:press-1', { ...drift, differences: [{ ...drift.differences[0]!, expected: 130 }] });
    await waitFor(() => opcua.delivered.length === 3 && row('opcua:press-1')?.status === 'in_sync', 5000);
    expect(repos.configs.log('opcua:press-1').map((e) => e.event)).toEqual([
      'desired',
      'verified',
      'drifted',
      'checked',
      'desired',
      // The second verified of version 2 is a repeat of the first, moved to the end with its new time.
      'drifted',
      'verified',
    ]);
    // A server that keeps reverting: each cycle moves the status twice (pending, in_sync), one revision each; the history stays put.
    const revision = () => repos.devices.get('opcua:press-1')!.revision;
    const rows = repos.configs.log('opcua:press-1').length;
    for (let i = 1; i <= 5; i++) {
      const before = revision();
      service.observed('opcua:press-1', {
        ...drift,
        differences: [{ ...drift.differences[0]!, expected: 130 }],
      });
      await waitFor(() => opcua.delivered.length === 3 + i && row('opcua:press-1')?.status === 'in_sync', 5000);
      expect(revision()).toBe(before + 2);
    }
    expect(repos.configs.log('opcua:press-1')).toHaveLength(rows);
    expect(repos.configs.log('opcua:press-1').at(-2)).toMatchObject({
      event: 'drifted',
      detail: expect.stringMatching(/^speed: expected 130, read 99 \(written again/),
    });
  });

  it('the same drift found again (no reapply) moves only its time: no row, no revision', async () => {
    store.transaction(() =>
      repos.devices.apply({
        protocol: 'opcua',
        name: 'press-2',
        to: 'provisioned',
        cause: 'test',
        actor: 'test',
        patch: { nameplate: { manufacturer: 'Schuler' } },
      }),
    );
    await service.start();
    const opcua = new RecordingDeliverer('opcua');
    opcua.answer = (d) => ({ kind: 'verified', observed: d.values });
    service.register(opcua);
    store.durable(() =>
      manager.apply(
        validateProfile({
          name: 'press',
          protocol: 'opcua',
          selector: { manufacturer: 'schuler' },
          schema: { speed: { type: 'integer' } },
          values: { speed: 120 },
          nodes: { speed: { nodeId: 'ns=2;s=Speed', dataType: 'UInt16' } },
        }),
        'alice',
        false,
      ),
    );
    await waitFor(() => row('opcua:press-2')?.status === 'in_sync', 5000);
    const drift = {
      observed: { speed: 99 },
      differences: [{ key: 'speed', nodeId: 'ns=2;s=Speed', expected: 120, actual: 99 }],
    };
    service.observed('opcua:press-2', drift);
    const revision = repos.devices.get('opcua:press-2')!.revision;
    const log = repos.configs.log('opcua:press-2');
    for (let i = 0; i < 10; i++) service.observed('opcua:press-2', drift);
    expect(repos.devices.get('opcua:press-2')!.revision).toBe(revision);
    expect(repos.configs.log('opcua:press-2').map((e) => [e.id, e.event, e.detail])).toEqual(log.map((e) => [e.id, e.event, e.detail]));
    expect(row('opcua:press-2')).toMatchObject({
      status: 'drifted',
      error: 'speed: expected 120, read 99',
    });
  });

  it('a device provisioned while the service runs gets the profile its selector gives it', async () => {
    await service.start();
    service.register(mqtt);
    store.durable(() => manager.apply(vib(), 'alice', false));
    provision('late');
    await waitFor(() => mqtt.delivered.some((d) => d.deviceId === 'mqtt:late'), 5000);
    expect(row('mqtt:late')).toMatchObject({ profile: 'vib', desiredVersion: 1, publishedVersion: 1 });
  });
});

describe('device_config_log stays bounded (SQLite on disk)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let store: Store;
  let repos: Repositories;
  const id = 'mqtt:s1';
  const sha = (v: number) => String(v).repeat(64).slice(0, 64);
  const log = (e: { event: string; detail?: string; version?: number; replace?: boolean }, patch = {}) =>
    store.transaction(() => repos.configs.update(id, patch, { profile: 'vib', version: 1, ...e }));
  const count = () => (store.db.prepare('SELECT count(*) AS n FROM device_config_log WHERE device_id = ?').get(id) as { n: number }).n;

  beforeEach(() => {
    tmp = tempDir();
    store = Store.open(
      {
        path: join(tmp.dir, 'c.db'),
        busyTimeoutMs: 1000,
        journalSizeLimitBytes: 1 << 20,
        integrityCheck: 'off',
      },
      pino({ level: 'silent' }),
    ).store;
    repos = openRepositories(store, {});
    store.transaction(() =>
      repos.devices.apply({
        protocol: 'mqtt',
        name: 's1',
        to: 'provisioned',
        cause: 'test',
        actor: 'test',
      }),
    );
  });
  afterEach(() => {
    store.close();
    tmp.cleanup();
  });

  it.each([
    {
      name: 'the same row as the last one is not added (only its time moves)',
      rows: [
        { event: 'report_of_earlier', detail: 'applied' },
        { event: 'report_of_earlier', detail: 'applied' },
        { event: 'report_of_earlier', detail: 'applied' },
      ],
      expected: [['report_of_earlier', 'applied']],
    },
    {
      name: 'a different detail is a new row',
      rows: [
        { event: 'report_of_earlier', detail: 'applied' },
        { event: 'report_of_earlier', detail: 'refused' },
      ],
      expected: [
        ['report_of_earlier', 'applied'],
        ['report_of_earlier', 'refused'],
      ],
    },
    {
      name: 'a retry takes the place of the last retry row (its detail the latest)',
      rows: [1, 2, 3, 4].map((n) => ({
        event: 'retry',
        detail: `down (attempt ${n})`,
        replace: true,
      })),
      expected: [['retry', 'down (attempt 4)']],
    },
    {
      name: 'a retry after another event is a new row',
      rows: [
        { event: 'retry', detail: 'down (attempt 1)', replace: true },
        { event: 'published', detail: sha(1) },
        { event: 'retry', detail: 'down (attempt 2)', replace: true },
      ],
      expected: [
        ['retry', 'down (attempt 1)'],
        ['published', sha(1)],
        ['retry', 'down (attempt 2)'],
      ],
    },
    {
      name: 'a cycle that repeats itself keeps one copy, moved to the end',
      rows: Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? { event: 'drifted', detail: 'a: expected 1, read 2' } : { event: 'verified', detail: sha(1) })),
      expected: [
        ['drifted', 'a: expected 1, read 2'],
        ['verified', sha(1)],
      ],
    },
  ])('$name', ({ rows, expected }) => {
    for (const r of rows) log(r);
    expect(repos.configs.log(id, 1000).map((e) => [e.event, e.detail])).toEqual(expected);
  });

  it('the time of a repeated row is the new one', () => {
    store.transaction(() => repos.configs.update(id, {}, { event: 'checked', detail: 'x' }, new Date('2026-01-01T00:00:00Z')));
    store.transaction(() => repos.configs.update(id, {}, { event: 'checked', detail: 'x' }, new Date('2026-01-02T00:00:00Z')));
    expect(repos.configs.log(id).map((e) => e.at.toISOString())).toEqual(['2026-01-02T00:00:00.000Z']);
  });

  it(`keeps the last ${LOG_KEEP} rows, and of older ones what wasSent() needs: each version sent, once`, () => {
    for (let v = 1; v <= 5; v++) {
      log({ event: 'desired', version: v, detail: sha(v) });
      log({ event: 'published', version: v, detail: sha(v) });
      log({
        event: v % 2 ? 'verified' : 'published',
        version: v,
        detail: sha(v),
      });
      log({ event: 'applied', version: v });
    }
    for (let i = 0; i < 3 * LOG_KEEP; i++) log({ event: 'report_of_earlier', detail: `report ${i}` });
    // The last LOG_KEEP rows and one 'published' or 'verified' row per version sent.
    expect(count()).toBe(LOG_KEEP + 5);
    expect(repos.configs.log(id, LOG_KEEP).at(0)!.detail).toBe(`report ${2 * LOG_KEEP}`);
    for (let v = 1; v <= 5; v++) {
      expect(repos.configs.wasSent(id, 'vib', v, sha(v))).toBe(true);
      expect(repos.configs.wasSent(id, 'vib', v)).toBe(true);
      expect(repos.configs.wasSent(id, 'vib', v, sha(v + 1))).toBe(false);
    }
    expect(repos.configs.wasSent(id, 'vib', 6)).toBe(false);
  });

  it('bumps the revision once per change of status, profile or version, never for a history row alone', () => {
    const revision = () => repos.devices.get(id)!.revision;
    const r0 = revision();
    log(
      { event: 'desired', detail: sha(1) },
      {
        profile: 'vib',
        desired_version: 1,
        desired_sha256: sha(1),
        status: 'pending',
      },
    );
    expect(revision()).toBe(r0 + 1);
    for (let i = 0; i < 3; i++) log({ event: 'retry', detail: `down (attempt ${i})`, replace: true }, { error: 'down' });
    log({ event: 'published', detail: sha(1) }, { published_version: 1 });
    expect(revision()).toBe(r0 + 1);
    log({ event: 'applied' }, { status: 'in_sync' });
    log({ event: 'applied' }, { status: 'in_sync' });
    expect(revision()).toBe(r0 + 2);
  });
});
