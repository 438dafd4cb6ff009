import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import { SyncRepository } from '../../agent/store/syncRepository.js';
import { tempDir } from '../helpers/daemon.js';

describe("a device's place in the upstream sync (devices show, the console's device page)", () => {
  const tmp = tempDir();
  const { store } = Store.open(
    { path: join(tmp.dir, 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
    pino({ level: 'silent' }),
  );
  afterAll(() => {
    store.close();
    tmp.cleanup();
  });

  it('waits from its change, is being sent once in a batch, is synced once acknowledged, and refused as a dead letter', () => {
    const devices = new DeviceRepository(store);
    const sync = new SyncRepository(store);
    const d = store.transaction(() => devices.apply({ protocol: 'mqtt', name: 'pump-7', to: 'discovered', cause: 'test', actor: 'test' }));
    expect(sync.deviceSync(d.id)).toMatchObject({ state: 'waiting', revision: d.revision, sending: false });
    sync.storeBatch('k1', [{ deviceId: d.id, revision: d.revision }] as never, '{}');
    expect(sync.deviceSync(d.id)).toMatchObject({ state: 'waiting', sending: true });
    sync.deleteBatch('k1');
    sync.acknowledge(d.id, d.revision);
    expect(sync.deviceSync(d.id)).toEqual({ state: 'synced' });
    const next = store.transaction(() => devices.apply({ protocol: 'mqtt', name: 'pump-7', to: 'pending', cause: 'test', actor: 'test' }));
    sync.deadLetter(d.id, next.revision, 422, 'assetTag: too long');
    expect(sync.deviceSync(d.id)).toMatchObject({ state: 'refused', revision: next.revision, status: 422, error: 'assetTag: too long' });
    expect(sync.deviceSync('mqtt:never-seen')).toEqual({ state: 'synced' });
  });
});
