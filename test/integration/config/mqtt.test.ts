import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConfiguredDevice } from '../../../scripts/simulate/configDevice.js';
import { simulateDevices } from '../../../scripts/simulate/mqttDevices.js';
import { applications, configGauge, configProfiles, configurationUntil, handled, profileFile } from '../../helpers/configDevices.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { freePort } from '../../helpers/mosquitto.js';

const REFUSAL = 'alertThreshold below the sensor floor of 5';

describe('configuration of MQTT devices through the embedded broker (real daemon, simulated devices)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let config: string;
  let ports: { provisioning: number; mtls: number };
  let daemon: Daemon;
  let base: string;
  let token: string;
  let configured: Map<string, ConfiguredDevice>;
  const env = () => ({ EDGE_AGENT_MQTT_PROVISIONING_PORT: String(ports.provisioning), EDGE_AGENT_MQTT_MTLS_PORT: String(ports.mtls) });
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const dev = (id: string) => configured.get(id)!;
  const start = async (extra: NodeJS.ProcessEnv = {}) => {
    daemon = Daemon.start(config, { env: { ...env(), ...extra } });
    base = await daemon.ready();
  };

  beforeAll(async () => {
    tmp = tempDir();
    ports = { provisioning: await freePort(), mtls: await freePort() };
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-config',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        '  heartbeatIntervalMs: 200',
        'http:',
        '  port: 0',
        'mqtt:',
        '  actionPollMs: 100',
        '  policy:',
        '    rules:',
        '      - { kind: token, action: approve }',
        '    default: hold',
        'configuration:',
        '  retryInitialMs: 200',
        '',
      ].join('\n'),
    );
    await start();
    token = readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim();
    writeFileSync(join(tmp.dir, 'ca.pem'), await (await fetch(`${base}/ca/chain`)).text());
    const made = await cli('devices', 'token', 'create', '--uses', '10', '--json');
    expect(made.code, made.stderr).toBe(0);
    const result = await simulateDevices({
      provisioningUrl: `mqtts://127.0.0.1:${ports.provisioning}`,
      mtlsUrl: `mqtts://127.0.0.1:${ports.mtls}`,
      caFile: join(tmp.dir, 'ca.pem'),
      token: (JSON.parse(made.stdout) as { token: string }).token,
      count: 3,
      idPrefix: 'vib-',
      outDir: join(tmp.dir, 'devices'),
      configuration: { refuse: ['vib-00002'], refuseError: REFUSAL },
    });
    expect(result.counts.issued, JSON.stringify(result.devices)).toBe(3);
    configured = result.configured!;
  }, 120_000);
  afterAll(async () => {
    await Promise.all([...(configured?.values() ?? [])].map((d) => d.stop()));
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('delivers a profile: the device applies it, reports it, and is in_sync in the API and /metrics', async () => {
    const applied = await configProfiles(config, 'apply', profileFile(tmp.dir, 'vib', { alertThreshold: 4.5, mode: 'peak' }));
    expect(applied).toMatchObject({ name: 'vib', version: 1, outcome: 'created' });
    for (const id of ['vib-00000', 'vib-00001']) {
      const shown = await configurationUntil(base, token, `mqtt:${id}`, (c) => c.status === 'in_sync');
      expect(shown).toMatchObject({ profile: 'vib', version: 1, reportedVersion: 1, error: null });
      expect(dev(id).current).toMatchObject({ profile: 'vib', version: 1, values: { alertThreshold: 4.5, mode: 'peak' } });
      expect(applications(dev(id), 'vib', 1)).toBe(1);
    }
    expect(await configGauge(base, 'in_sync')).toBe(2);
  });

  it("marks a device that refuses failed, with the device's reason", async () => {
    const shown = await configurationUntil(base, token, 'mqtt:vib-00002', (c) => c.status === 'failed');
    expect(shown).toMatchObject({ profile: 'vib', version: 1, error: REFUSAL });
    expect(dev('vib-00002').applied).toEqual([]);
    expect(await configGauge(base, 'failed')).toBe(1);
  });

  it('refuses a report of a version the device was never sent, and a malformed one: nothing changes', async () => {
    const before = await configurationUntil(base, token, 'mqtt:vib-00000', () => true);
    const dir = join(tmp.dir, 'devices', 'vib-00000');
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.mtls}`, {
      clientId: 'vib-00000-forger',
      key: readFileSync(join(dir, 'key.pem')),
      cert: readFileSync(join(dir, 'cert.pem')),
      ca: readFileSync(join(tmp.dir, 'ca.pem')),
      reconnectPeriod: 0,
    });
    try {
      const from = daemon.logs.length;
      await client.publishAsync('config/vib-00000/reported', JSON.stringify({ profile: 'vib', version: 7, status: 'applied' }), { qos: 1 });
      const refused = await daemon.waitForLog((l) => l.msg === 'configuration report refused', 10_000, from);
      expect(refused).toMatchObject({ device: 'vib-00000', version: 7, reason: expect.stringMatching(/never sent/) });
      await client.publishAsync('config/vib-00000/reported', '{"profile":"vib","version":1,"status":"applied","extra":1}', { qos: 1 });
      const dropped = await daemon.waitForLog((l) => l.msg === 'malformed configuration report dropped', 10_000, from);
      expect(dropped).toMatchObject({ device: 'vib-00000', problem: expect.stringMatching(/extra/) });
    } finally {
      await client.endAsync();
    }
    const after = await configurationUntil(base, token, 'mqtt:vib-00000', () => true);
    expect(after).toEqual(before);
  });

  it('survives a kill -9 between the commit of version 2 and its publish: after a restart the device applies version 2 once', async () => {
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    await start({ EDGE_AGENT_FAILPOINT: 'configuration.publish.before' });
    const dying = daemon;
    // The CLI's answer may or may not arrive before the daemon dies: the commit is what counts.
    await cli('config-profiles', 'apply', profileFile(tmp.dir, 'vib', { alertThreshold: 6, mode: 'rms' }), '--json');
    expect((await dying.exited).signal).toBe('SIGKILL');
    // Committed before the publish: the database says pending version 2 (read directly, the daemon is down).
    const shown = await cli('devices', 'show', 'mqtt:vib-00000', '--json', '--local');
    expect(shown.code, shown.stderr).toBe(0);
    expect((JSON.parse(shown.stdout) as { configuration: unknown }).configuration).toMatchObject({ profile: 'vib', version: 2, status: 'pending' });
    expect(applications(dev('vib-00000'), 'vib', 2)).toBe(0);

    await start();
    await configurationUntil(base, token, 'mqtt:vib-00000', (c) => c.status === 'in_sync' && c.version === 2);
    expect(dev('vib-00000').current).toMatchObject({ version: 2, values: { alertThreshold: 6, mode: 'rms' } });
    await configurationUntil(base, token, 'mqtt:vib-00001', (c) => c.status === 'in_sync' && c.version === 2);
    // Redelivered once more by the next start (the retained message again): reported again, not applied again, by both.
    const seen = ['vib-00000', 'vib-00001'].map((id) => dev(id).events.length);
    daemon.kill('SIGTERM');
    await daemon.exited;
    await start();
    for (const [i, id] of ['vib-00000', 'vib-00001'].entries()) {
      await handled(dev(id), (e) => e.kind === 'repeated' && e.version === 2, seen[i]);
      expect(applications(dev(id), 'vib', 2)).toBe(1);
    }
    await configurationUntil(base, token, 'mqtt:vib-00000', (c) => c.status === 'in_sync' && c.version === 2);
  });

  it('rolls back with one command: version 1 returns to the device, applied again', async () => {
    const rolled = await configProfiles(config, 'rollback', 'vib', '1');
    expect(rolled).toMatchObject({ name: 'vib', from: 2, to: 1, outcome: 'moved' });
    const shown = await configurationUntil(base, token, 'mqtt:vib-00000', (c) => c.status === 'in_sync' && c.version === 1);
    expect(shown).toMatchObject({ profile: 'vib', reportedVersion: 1 });
    expect(dev('vib-00000').current).toMatchObject({ version: 1, values: { alertThreshold: 4.5, mode: 'peak' } });
    expect(dev('vib-00000').applied.map((d) => d.version)).toEqual([1, 2, 1]);
  });
});
