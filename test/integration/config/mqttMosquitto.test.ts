import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfiguredDevice } from '../../../scripts/simulate/configDevice.js';
import { simulateDevices } from '../../../scripts/simulate/mqttDevices.js';
import { applications, configGauge, configProfiles, configurationUntil, profileFile } from '../../helpers/configDevices.js';
import { Daemon, runCli, tempDir } from '../../helpers/daemon.js';
import { pollUntil } from '../../helpers/waiters.js';
import { agentWithMosquitto, Mosquitto } from '../../helpers/mosquitto.js';

const REFUSAL = 'mode rms is not supported by this firmware';

describe('configuration of MQTT devices through a real Mosquitto 2 (generated ACLs, the agent on its external link)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let config: string;
  let broker: Mosquitto;
  let ports: { provisioning: number; mtls: number };
  let dir: string;
  let daemon: Daemon;
  let base: string;
  let token: string;
  let configured: Map<string, ConfiguredDevice>;

  beforeAll(async () => {
    tmp = tempDir();
    ({ config, broker, ports, dir } = await agentWithMosquitto(tmp.dir, [
      'agent:',
      '  id: gw-mq-config',
      `  dataDir: ${join(tmp.dir, 'data')}`,
      '  heartbeatIntervalMs: 200',
      'http:',
      '  port: 0',
      'configuration:',
      '  retryInitialMs: 200',
    ]));
    daemon = Daemon.start(config);
    base = await daemon.ready();
    await daemon.waitForLog((l) => l.msg === 'connected to the MQTT broker');
    token = readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim();
    const made = await runCli(['devices', 'token', 'create', '--uses', '5', '--json', '--config', config]);
    expect(made.code, made.stderr).toBe(0);
    const result = await simulateDevices({
      provisioningUrl: `mqtts://127.0.0.1:${ports.provisioning}`,
      mtlsUrl: `mqtts://127.0.0.1:${ports.mtls}`,
      caFile: join(dir, 'ca.pem'),
      token: (JSON.parse(made.stdout) as { token: string }).token,
      protocolVersion: 5,
      count: 2,
      idPrefix: 'press-',
      outDir: join(tmp.dir, 'devices'),
      configuration: { check: (values) => (values.mode === 'rms' ? REFUSAL : undefined) },
    });
    expect(result.counts.issued, JSON.stringify(result.devices)).toBe(2);
    configured = result.configured!;
  }, 120_000);
  afterAll(async () => {
    await Promise.all([...(configured?.values() ?? [])].map((d) => d.stop()));
    await daemon?.dispose();
    await broker?.stop();
    tmp?.cleanup();
  });

  it('delivers the retained desired configuration through Mosquitto; each device applies it once and is in_sync', async () => {
    await configProfiles(config, 'apply', profileFile(tmp.dir, 'press', { alertThreshold: 3, mode: 'peak' }));
    for (const id of ['press-00000', 'press-00001']) {
      await configurationUntil(base, token, `mqtt:${id}`, (c) => c.status === 'in_sync' && c.version === 1);
      expect(applications(configured.get(id)!, 'press', 1)).toBe(1);
    }
    expect(await configGauge(base, 'in_sync')).toBe(2);
  });

  it('marks a device failed with the reason its own check gave (values it cannot run)', async () => {
    // A profile no selector picks, pinned to one device.
    await configProfiles(config, 'apply', profileFile(tmp.dir, 'press-rms', { alertThreshold: 3, mode: 'rms' }, { selector: { model: 'NONE' } }));
    await configProfiles(config, 'assign', 'mqtt:press-00001', 'press-rms');
    const shown = await configurationUntil(base, token, 'mqtt:press-00001', (c) => c.status === 'failed');
    expect(shown).toMatchObject({ profile: 'press-rms', version: 1, error: REFUSAL });
    expect(configured.get('press-00001')!.current).toMatchObject({ profile: 'press', version: 1 });
    expect(await configGauge(base, 'failed')).toBe(1);
  });

  it("gives another device nothing of a device's desired configuration, even on a wildcard", async () => {
    const creds = join(tmp.dir, 'devices', 'press-00001');
    const got: string[] = [];
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.mtls}`, {
      clientId: `press-00001-snoop-${process.pid}`,
      protocolVersion: 5,
      key: readFileSync(join(creds, 'key.pem')),
      cert: readFileSync(join(creds, 'cert.pem')),
      ca: readFileSync(join(dir, 'ca.pem')),
      reconnectPeriod: 0,
    });
    try {
      client.on('message', (topic) => got.push(topic));
      await client.subscribeAsync(['config/+/desired', 'config/press-00000/desired'], { qos: 1 });
      // Mosquitto sends a subscription's retained messages before it reads the next packet: once the ping is back, they are all here.
      await client.subscribeAsync('devices/press-00001/ping', { qos: 1 });
      const pinged = new Promise<void>((resolve) => client.on('message', (topic) => topic === 'devices/press-00001/ping' && resolve()));
      await client.publishAsync('devices/press-00001/ping', 'x', { qos: 1 });
      await pinged;
      expect(got).toContain('config/press-00001/desired');
      expect(got.filter((t) => t.startsWith('config/press-00000/'))).toEqual([]);
    } finally {
      await client.endAsync();
    }
  });

  it('publishes again what a restarted Mosquitto (no persistence) lost: a device that was offline then gets its configuration', async () => {
    const id = 'press-00000';
    const creds = join(tmp.dir, 'devices', id);
    const tls = {
      key: readFileSync(join(creds, 'key.pem'), 'utf8'),
      cert: readFileSync(join(creds, 'cert.pem'), 'utf8'),
      ca: readFileSync(join(dir, 'ca.pem'), 'utf8'),
    };
    await configured.get(id)!.stop();
    await configProfiles(config, 'apply', profileFile(tmp.dir, 'press', { alertThreshold: 4, mode: 'peak' }));
    await configurationUntil(base, token, `mqtt:${id}`, (c) => c.status === 'pending' && c.version === 2);
    // The broker holds v2 retained before it goes: read it as the device would (another client id, the same certificate).
    const retainedVersion = async (): Promise<number | undefined> => {
      const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.mtls}`, {
        clientId: `${id}-peek-${process.pid}`,
        protocolVersion: 5,
        ...tls,
        reconnectPeriod: 0,
      });
      try {
        const got = new Promise<number>((resolve) =>
          client.on('message', (_topic, payload) => payload.length > 0 && resolve((JSON.parse(payload.toString()) as { version: number }).version)),
        );
        await client.subscribeAsync(`config/${id}/desired`, { qos: 1 });
        return await Promise.race([got, new Promise<undefined>((r) => setTimeout(() => r(undefined), 2_000))]);
      } finally {
        await client.endAsync();
      }
    };
    await pollUntil(async () => ((await retainedVersion()) === 2 ? true : undefined), {
      timeoutMs: 20_000,
      intervalMs: 200,
      message: () => 'v2 never retained',
    });

    const from = daemon.logs.length;
    await broker.stop();
    broker = await Mosquitto.start(join(dir, 'mosquitto.conf'), dir, [tmp.dir]);
    await daemon.waitForLog((l) => l.msg === 'connected to the MQTT broker', 60_000, from);

    const device = new ConfiguredDevice(id, { url: `mqtts://127.0.0.1:${ports.mtls}`, protocolVersion: 5, ...tls }, { refusing: false });
    configured.set(id, device);
    await device.ready;
    const shown = await configurationUntil(base, token, `mqtt:${id}`, (c) => c.status === 'in_sync' && c.version === 2);
    expect(shown.reportedVersion).toBe(2);
    expect(applications(device, 'press', 2)).toBe(1);
  }, 120_000);
});
