import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../agent/config/load.js';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import { Daemon, runCli, tempDir, writeConfig } from '../helpers/daemon.js';

describe('devices list and devices set through the real daemon, sync off', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  const cli = (...args: string[]) => runCli([...args, '--config', config]);

  beforeAll(async () => {
    tmp = tempDir();
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-devices',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        '  enabled: false',
        'sync:',
        '  enabled: false',
        '',
      ].join('\n'),
    );
    // Two devices in the inventory before the daemon starts.
    const { store } = Store.open(loadConfig({ file: config }).config.store, pino({ level: 'silent' }));
    store.transaction(() => {
      for (const name of ['meter-1', 'meter-2']) new DeviceRepository(store).apply({ protocol: 'mqtt', name, to: 'discovered', cause: 'test', actor: 'test' });
    });
    store.close();
    daemon = Daemon.start(config);
    await daemon.ready();
  });
  afterAll(async () => {
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('devices set says the change is saved and not sent while the sync is off', async () => {
    const set = await cli('devices', 'set', 'mqtt:meter-1', '--asset-tag', 'PLANT-4711', '--site', 'Linz', '--line', 'L3');
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toMatch(
      new RegExp(
        /^mqtt:meter-1: asset tag PLANT-4711, location site=Linz line=L3; revision \d+ /.source +
          /saved; the sync is off \(sync\.enabled: false\): nothing is sent to the CMMS\n$/.source,
      ),
    );
    expect(set.stdout).not.toContain('queued for the sync');
  });

  it('devices list shows the asset tag and the location, through the API and from the database', async () => {
    const expectTable = (stdout: string) => {
      const [header, ...rows] = stdout
        .trimEnd()
        .split('\n')
        .map((l) => l.split('\t'));
      expect(header).toEqual(['DEVICE', 'STATE', 'ONLINE', 'MANUFACTURER', 'MODEL', 'SERIAL', 'ASSET TAG', 'LOCATION', 'LAST SEEN']);
      const byId = new Map(rows.map((r) => [r[0], r]));
      expect(byId.get('mqtt:meter-1')?.slice(6, 8)).toEqual(['PLANT-4711', 'site=Linz line=L3']);
      expect(byId.get('mqtt:meter-2')?.slice(6, 8)).toEqual(['-', '-']);
    };
    const viaApi = await cli('devices', 'list');
    expect(viaApi.code, viaApi.stderr).toBe(0);
    expect(viaApi.stderr).toBe('');
    expectTable(viaApi.stdout);
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    const fromDatabase = await cli('devices', 'list');
    expect(fromDatabase.code, fromDatabase.stderr).toBe(0);
    expect(fromDatabase.stderr).toContain('read from the database directly');
    expectTable(fromDatabase.stdout);
  });
});
