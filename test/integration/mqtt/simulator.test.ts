import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceId, simulateDevices, type SimulationResult } from '../../../scripts/simulate/mqttDevices.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { agentWithMosquitto, freePort, type Mosquitto } from '../../helpers/mosquitto.js';

/** Every device's problem, so that a failure names them (empty when all enrolled). */
const problems = (r: SimulationResult) => r.devices.filter((d) => d.status !== 'issued').map((d) => `${d.id} ${d.status} ${d.reason}`);

/**
 * The simulator's own features (scripts/simulate/mqttDevices.ts) against the
 * real daemon: devices shared among worker threads (which run the build,
 * dist/), keys made beforehand, and reconnections that resume the device's
 * own TLS session.
 */
describe('the device simulator: worker threads, pre-generated keys, TLS resumption (embedded broker)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let port: number;
  let cafile: string;
  let token: string;
  let admin: string;
  const cli = (...args: string[]) => runCli([...args, '--config', config, '--token', admin]);
  const provisioned = async (prefix: string) =>
    (JSON.parse((await cli('devices', 'list', '--state', 'provisioned', '--json')).stdout) as { name: string }[])
      .map((d) => d.name)
      .filter((n) => n.startsWith(prefix))
      .sort();

  beforeAll(async () => {
    tmp = tempDir();
    port = await freePort();
    cafile = join(tmp.dir, 'ca.pem');
    config = writeConfig(tmp.dir, ['agent:', '  id: gw-sim', `  dataDir: ${join(tmp.dir, 'data')}`, 'http:', '  port: 0', ''].join('\n'));
    daemon = Daemon.start(config, { env: { EDGE_AGENT_MQTT_PROVISIONING_PORT: String(port) } });
    const base = await daemon.ready();
    writeFileSync(cafile, await (await fetch(`${base}/ca/chain`)).text());
    admin = readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim();
    const made = await cli('devices', 'token', 'create', '--uses', '100', '--json');
    expect(made.code, made.stderr).toBe(0);
    token = (JSON.parse(made.stdout) as { token: string }).token;
  }, 60_000);
  afterAll(async () => {
    await daemon?.dispose();
    tmp?.cleanup();
  });

  const options = () => ({ provisioningUrl: `mqtts://127.0.0.1:${port}`, caFile: cafile, token });

  it('shares the devices among worker threads and merges their results in device order', async () => {
    const result = await simulateDevices({ ...options(), count: 12, concurrency: 4, workers: 3, idPrefix: 'thr-', startIndex: 5 });
    expect(problems(result)).toEqual([]);
    expect(result.workers).toBe(3);
    expect(result.devices.map((d) => d.id)).toEqual(Array.from({ length: 12 }, (_, i) => deviceId('thr-', 5 + i)));
    expect(result.counts).toEqual({ issued: 12, pending: 0, rejected: 0, failed: 0 });
    expect(result.enrollmentsPerSecond).toBeGreaterThan(0);
    expect(new Set(result.devices.map((d) => d.serial)).size).toBe(12);
    expect(result.prepareMs).toBeUndefined();
    expect(await provisioned('thr-')).toEqual(result.devices.map((d) => d.id));
  });

  it('makes keys and CSRs beforehand, in one thread and in several', async () => {
    const one = await simulateDevices({ ...options(), count: 3, pregenerate: true, idPrefix: 'pre1-' });
    const two = await simulateDevices({ ...options(), count: 4, workers: 2, pregenerate: true, idPrefix: 'pre2-' });
    for (const r of [one, two]) {
      expect(problems(r)).toEqual([]);
      expect(r.prepareMs).toBeGreaterThanOrEqual(0);
    }
    expect([one.workers, two.workers]).toEqual([1, 2]);
    expect(await provisioned('pre')).toHaveLength(7);
  });

  it('reconnects resuming the TLS session of the device’s own previous connection, and without it does full handshakes', async () => {
    const resumed = await simulateDevices({ ...options(), count: 4, workers: 2, reconnects: 2, resumeTls: true, idPrefix: 'res-' });
    expect(problems(resumed)).toEqual([]);
    // isSessionReused() on every reconnection: the listener resumed each one.
    expect(resumed.devices.map((d) => [d.reconnectedMs?.length, d.resumed])).toEqual(Array(4).fill([2, 2]));
    const full = await simulateDevices({ ...options(), count: 2, reconnects: 1, idPrefix: 'full-' });
    expect(problems(full)).toEqual([]);
    expect(full.devices.map((d) => [d.reconnectedMs?.length, d.resumed])).toEqual(Array(2).fill([1, 0]));
  });

  it('resumes the hello’s session on the configuration connection', async () => {
    const result = await simulateDevices({ ...options(), count: 2, resumeTls: true, idPrefix: 'cfg-', configuration: {} });
    try {
      expect(problems(result)).toEqual([]);
      expect([...result.configured!.values()].map((d) => d.resumedConnections)).toEqual([1, 1]);
    } finally {
      await Promise.all([...(result.configured?.values() ?? [])].map((d) => d.stop()));
    }
  });

  it('stops every thread’s devices when the caller aborts', async () => {
    const stop = new AbortController();
    stop.abort();
    const result = await simulateDevices({ ...options(), count: 4, workers: 2, idPrefix: 'abort-', signal: stop.signal });
    expect(result.devices.map((d) => [d.id, d.status, d.reason])).toEqual(
      Array.from({ length: 4 }, (_, i) => [deviceId('abort-', i), 'failed', 'aborted before it started']),
    );
  });
});

describe('the device simulator through a real Mosquitto: worker threads and TLS resumption', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let broker: Mosquitto;
  let ports: { provisioning: number; mtls: number };
  let dir: string;
  let token: string;

  beforeAll(async () => {
    tmp = tempDir();
    let config: string;
    ({ config, broker, ports, dir } = await agentWithMosquitto(tmp.dir, [
      'agent:',
      '  id: gw-sim-mq',
      `  dataDir: ${join(tmp.dir, 'data')}`,
      'http:',
      '  port: 0',
    ]));
    daemon = Daemon.start(config);
    await daemon.ready();
    await daemon.waitForLog((l) => l.msg === 'connected to the MQTT broker');
    const made = await runCli(['devices', 'token', 'create', '--uses', '20', '--json', '--local', '--config', config]);
    expect(made.code, made.stderr).toBe(0);
    token = (JSON.parse(made.stdout) as { token: string }).token;
  }, 120_000);
  afterAll(async () => {
    await daemon?.dispose();
    await broker?.stop();
    tmp?.cleanup();
  });

  it('enrolls from two threads over MQTT 5 and resumes each device’s own session on reconnect', async () => {
    const result = await simulateDevices({
      provisioningUrl: `mqtts://127.0.0.1:${ports.provisioning}`,
      caFile: join(dir, 'ca.pem'),
      token,
      protocolVersion: 5,
      count: 6,
      concurrency: 4,
      workers: 2,
      pregenerate: true,
      reconnects: 1,
      resumeTls: true,
      idPrefix: 'mq-',
    });
    expect(problems(result)).toEqual([]);
    expect(result.workers).toBe(2);
    expect(result.devices.map((d) => d.resumed)).toEqual(Array(6).fill(1));
  });
});
