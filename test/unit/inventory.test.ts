import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { canTransition, type DeviceState } from '../../agent/inventory/device.js';
import { RateLimiter } from '../../agent/onboarding/rateLimiter.js';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository, TransitionError } from '../../agent/store/deviceRepository.js';
import { tempDir } from '../helpers/daemon.js';

describe('device state machine', () => {
  it.each([
    [undefined, 'discovered', true],
    [undefined, 'revoked', false],
    ['discovered', 'pending', true],
    ['pending', 'provisioned', true],
    ['provisioned', 'pending', false],
    ['provisioned', 'revoked', true],
    ['revoked', 'provisioned', true],
    ['rejected', 'pending', true],
    ['decommissioned', 'discovered', false],
    ['decommissioned', 'decommissioned', false],
    ['provisioned', 'provisioned', true],
  ] as [DeviceState | undefined, DeviceState, boolean][])('%s -> %s allowed: %s', (from, to, allowed) => {
    expect(canTransition(from, to)).toBe(allowed);
  });
});

describe('device repository', () => {
  let tmp: ReturnType<typeof tempDir>;
  let store: Store;
  let devices: DeviceRepository;
  beforeEach(() => {
    tmp = tempDir();
    store = Store.open(
      { path: join(tmp.dir, 'i.db'), busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    ).store;
    devices = new DeviceRepository(store);
  });
  afterEach(() => {
    store.close();
    tmp.cleanup();
  });

  it('records every change with its audit row and a revision that grows', () => {
    store.transaction(() =>
      devices.apply({ protocol: 'mqtt', name: 'p-1', to: 'pending', cause: 'request r1', actor: 'policy', patch: { nameplate: { manufacturer: 'Acme' } } }),
    );
    store.transaction(() =>
      devices.apply({ protocol: 'mqtt', name: 'p-1', to: 'provisioned', cause: 'issued', actor: 'policy', patch: { certificateSerial: '0a' } }),
    );
    const d = devices.get('mqtt:p-1')!;
    expect(d).toMatchObject({ state: 'provisioned', revision: 2, certificateSerial: '0a', nameplate: { manufacturer: 'Acme' } });
    expect(devices.events('mqtt:p-1').map((e) => [e.from, e.to, e.cause])).toEqual([
      [undefined, 'pending', 'request r1'],
      ['pending', 'provisioned', 'issued'],
    ]);
  });

  it('refuses a transition the state machine does not have, and changes nothing', () => {
    store.transaction(() => devices.apply({ protocol: 'mqtt', name: 'p-2', to: 'discovered', cause: 'seen', actor: 'discovery' }));
    expect(() => store.transaction(() => devices.apply({ protocol: 'mqtt', name: 'p-2', to: 'revoked', cause: 'bad', actor: 'x' }))).toThrow(TransitionError);
    expect(devices.get('mqtt:p-2')).toMatchObject({ state: 'discovered', revision: 1 });
    expect(devices.events('mqtt:p-2')).toHaveLength(1);
  });

  it('finds the device of a certificate through an index (what a renewal or revocation changes), not by scanning the inventory', () => {
    // The statement of the sync_certificate_status trigger (migration 0006), which SQLite plans the same way inside the trigger.
    const plan = store.db.prepare('EXPLAIN QUERY PLAN UPDATE devices SET revision = revision + 1 WHERE certificate_serial = ?').all('0a') as {
      detail: string;
    }[];
    expect(plan.map((p) => p.detail).join('; ')).toMatch(/USING (COVERING )?INDEX devices_certificate/);
    store.transaction(() =>
      devices.apply({ protocol: 'mqtt', name: 'p-9', to: 'provisioned', cause: 'issued', actor: 'policy', patch: { certificateSerial: '0a' } }),
    );
    const by = store.db.prepare('SELECT id FROM devices INDEXED BY devices_certificate WHERE certificate_serial = ?').all('0a');
    expect(by).toEqual([{ id: 'mqtt:p-9' }]);
  });

  it('refuses a change outside a transaction', () => {
    expect(() => devices.apply({ protocol: 'mqtt', name: 'p-3', to: 'discovered', cause: 'seen', actor: 'discovery' })).toThrow(/inside a transaction/);
  });

  it('fills empty nameplate fields from announcements without overwriting the enrolled ones', () => {
    store.transaction(() =>
      devices.apply({ protocol: 'mqtt', name: 'p-4', to: 'pending', cause: 'r', actor: 'policy', patch: { nameplate: { manufacturer: 'Acme' } } }),
    );
    store.transaction(() =>
      devices.apply({
        protocol: 'mqtt',
        name: 'p-4',
        to: 'pending',
        cause: 'seen',
        actor: 'discovery',
        patch: { fillNameplate: { manufacturer: 'Spoof', model: 'M-1' } },
      }),
    );
    expect(devices.get('mqtt:p-4')!.nameplate).toEqual({ manufacturer: 'Acme', model: 'M-1' });
  });

  it('moves the revision on a presence change only', () => {
    store.transaction(() => devices.apply({ protocol: 'mqtt', name: 'p-5', to: 'discovered', cause: 'seen', actor: 'discovery', patch: { online: true } }));
    devices.touch('mqtt:p-5', true);
    expect(devices.get('mqtt:p-5')!.revision).toBe(1);
    devices.touch('mqtt:p-5', false);
    expect(devices.get('mqtt:p-5')).toMatchObject({ revision: 2, online: false });
  });
});

describe('rate limiter', () => {
  it('allows a burst per device, then one per interval, and caps all devices together', () => {
    let now = 0;
    const limiter = new RateLimiter({ perDeviceBurst: 2, perDeviceIntervalMs: 1000, globalPerSecond: 3 }, () => now);
    expect([limiter.take('a'), limiter.take('a'), limiter.take('a')]).toEqual(['ok', 'ok', 'device']);
    expect(limiter.take('b')).toBe('ok');
    expect(limiter.take('c')).toBe('global');
    now = 1000;
    expect([limiter.take('a'), limiter.take('a')]).toEqual(['ok', 'device']);
  });
});

describe('told after the commit: Store.afterCommit and the device repository', () => {
  let tmp: ReturnType<typeof tempDir>;
  let store: Store;
  let told: { id: string; committed: boolean }[];
  let devices: DeviceRepository;
  /** Whether the device's row is visible on a second connection: what "committed" means to another reader. */
  let committed: (id: string) => boolean;
  let reader: Store;
  beforeEach(() => {
    tmp = tempDir();
    const options = { path: join(tmp.dir, 'c.db'), busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' as const };
    store = Store.open(options, pino({ level: 'silent' })).store;
    reader = Store.openReadOnly(options);
    committed = (id) => reader.db.prepare('SELECT 1 FROM devices WHERE id = ?').get(id) !== undefined;
    told = [];
    devices = new DeviceRepository(store, (id) => told.push({ id, committed: committed(id) }));
  });
  afterEach(() => {
    reader.close();
    store.close();
    tmp.cleanup();
  });
  const discover = (name: string) => devices.apply({ protocol: 'mqtt', name, to: 'discovered', cause: 'test', actor: 'test' });

  it('tells a change once its transaction has committed, once per device however many changes it held', () => {
    store.transaction(() => {
      discover('pump-1');
      devices.apply({ protocol: 'mqtt', name: 'pump-1', to: 'pending', cause: 'test', actor: 'test' });
      discover('pump-2');
      expect(told).toEqual([]);
    });
    expect(told).toEqual([
      { id: 'mqtt:pump-1', committed: true },
      { id: 'mqtt:pump-2', committed: true },
    ]);
    store.durable(() => devices.apply({ protocol: 'mqtt', name: 'pump-2', to: 'pending', cause: 'test', actor: 'test' }));
    expect(told.at(-1)).toEqual({ id: 'mqtt:pump-2', committed: true });
  });

  it('tells nothing of a transaction that rolled back, nor of it at the next commit', () => {
    expect(() =>
      store.transaction(() => {
        discover('pump-1');
        throw new Error('rolled back');
      }),
    ).toThrow('rolled back');
    expect(told).toEqual([]);
    store.transaction(() => discover('pump-3'));
    expect(told).toEqual([{ id: 'mqtt:pump-3', committed: true }]);
  });

  it('tells going online or offline, after the write, and not a presence that changes nothing', () => {
    store.transaction(() => discover('pump-1'));
    told = [];
    devices.touch('mqtt:pump-1', true);
    devices.touch('mqtt:pump-1', true);
    expect(told).toEqual([{ id: 'mqtt:pump-1', committed: true }]);
    expect(devices.offline('mqtt:pump-1')).toBe(true);
    expect(devices.offline('mqtt:pump-1')).toBe(false);
    expect(told.map((t) => t.id)).toEqual(['mqtt:pump-1', 'mqtt:pump-1']);
  });
});
