import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, runCli, tempDir } from '../helpers/daemon.js';
import { agentWithMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { SAMPLE_PUMP, startHangingServer, startOpcuaServer, type OpcuaServerHandle, type RawTcpServer } from '../helpers/opcuaServer.js';
import { pollUntil } from '../helpers/waiters.js';

const exec = promisify(execFile);

interface Run {
  id: number;
  protocol: string;
  status: string;
  found: number;
  targetsTotal: number;
  targetsDone: number;
  error?: string;
  cancelledBy?: string;
}
interface Target {
  target: string;
  source: string;
  status: string;
  deviceId?: string;
}
interface Device {
  id: string;
  state: string;
  nameplate: Record<string, string>;
}
interface Discovered {
  runs: { run: Run; targets: Target[] }[];
  events: { runId: number; id: number; event: string; data: { phase?: string; done?: number; total?: number; found?: number; status?: string } }[];
  devices: Device[];
  unfinished: number[];
}

/**
 * `edge-agent discover` against the running daemon: real node-opcua servers,
 * a real Mosquitto holding retained Homie announcements, the daemon's API
 * and its Server-Sent Events.
 */
describe('edge-agent discover: OPC UA servers and MQTT devices through the API, with progress', () => {
  let tmp: ReturnType<typeof tempDir>;
  let config: string;
  let broker: Mosquitto;
  let daemon: Daemon;
  let servers: OpcuaServerHandle[];
  let hanging: RawTcpServer;
  let ports: { provisioning: number; mtls: number };
  const dir = () => join(tmp.dir, 'broker');
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const inventory = async () => JSON.parse((await cli('devices', 'list', '--json')).stdout) as Device[];

  beforeAll(async () => {
    tmp = tempDir();
    servers = await Promise.all([
      startOpcuaServer({
        applicationUri: 'urn:plant9:press-1',
        applicationName: 'Press 1',
        buildInfo: { manufacturerName: 'ACME Automation', productName: 'ACME S9 PLC', softwareVersion: '9.4.1' },
        deviceSet: [SAMPLE_PUMP],
      }),
      startOpcuaServer({ applicationUri: 'urn:plant9:oven-2', applicationName: 'Oven 2' }),
    ]);
    hanging = await startHangingServer('127.0.0.1');
    ({ config, broker, ports } = await agentWithMosquitto(tmp.dir, [
      'agent:',
      '  id: gw-disc',
      `  dataDir: ${join(tmp.dir, 'data')}`,
      'http:',
      '  port: 0',
      'opcua:',
      '  runOnStart: false',
      '  timeoutMs: 3000',
      `  scan: { ranges: [127.0.0.1/32], ports: [${[...servers.map((s) => s.port), hanging.port].join(', ')}], concurrency: 4, maxAddresses: 4 }`,
    ]));
    // A Homie device with its own certificate leaves retained announcements on the broker, as Homie devices do.
    const out = join(tmp.dir, 'valve-9');
    expect((await cli('ca', 'issue', '--profile', 'mqtt-device', '--id', 'valve-9', '--generate-key', '--out', out)).code).toBe(0);
    const tls = [
      '-h',
      '127.0.0.1',
      '-p',
      String(ports.mtls),
      '--cafile',
      join(dir(), 'ca.pem'),
      '--cert',
      join(out, 'cert.pem'),
      '--key',
      join(out, 'key.pem'),
      '-q',
      '1',
      '-r',
    ];
    await exec('mosquitto_pub', [...tls, '-t', 'homie/valve-9/$name', '-m', 'Valve 9']);
    await exec('mosquitto_pub', [...tls, '-t', 'homie/valve-9/$state', '-m', 'ready']);
    daemon = Daemon.start(config);
    await daemon.ready();
    await daemon.waitForLog((l) => l.msg === 'connected to the MQTT broker');
  }, 180_000);
  afterAll(async () => {
    await daemon?.dispose();
    await broker?.stop();
    await Promise.all((servers ?? []).map((s) => s.stop()));
    await hanging?.stop();
    tmp?.cleanup();
  });

  it('runs both protocols from the CLI, draws the progress, and prints a table matching the inventory', async () => {
    const r = await cli('discover', '--wait', '120');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/started opcua run \d+ and mqtt run \d+/);
    // The hanging server answers TCP, so the scan probes it too: not an OPC UA server, which is not an error.
    expect(r.stderr).toMatch(/opcua run \d+ \[#+\] done 3\/3 targets, 2 found, 0 errors/);
    const devices = await inventory();
    const found = devices.filter((d) => d.id.startsWith('opcua:urn.plant9') || d.id === 'mqtt:valve-9');
    expect(found.map((d) => d.id).sort()).toEqual([
      expect.stringMatching(/^mqtt:valve-9$/),
      expect.stringMatching(/^opcua:urn\.plant9\.oven-2-/),
      expect.stringMatching(/^opcua:urn\.plant9\.press-1-/),
    ]);
    const rows = r.stdout
      .split('\n')
      .filter((l) => /^(opcua|mqtt):/.test(l))
      .map((l) => l.split('\t'));
    expect(rows.map((c) => c[0]).sort()).toEqual(found.map((d) => d.id).sort());
    for (const row of rows) {
      const d = found.find((x) => x.id === row[0])!;
      expect(row.slice(1, 5)).toEqual([d.state, d.nameplate.manufacturer ?? '-', d.nameplate.model ?? '-', d.nameplate.serialNumber ?? '-']);
    }
    expect(rows.find((c) => c[0]!.includes('press-1'))?.[2]).toBe(SAMPLE_PUMP.manufacturer);
  });

  it('streams the progress of a run narrowed to one target in order, and --json returns what the inventory holds', async () => {
    const only = servers[1]!;
    const r = await cli('discover', '--opcua', '--target', only.endpointUrl, '--json');
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Discovered;
    expect(out.runs).toHaveLength(1);
    const { run, targets } = out.runs[0]!;
    expect(run).toMatchObject({ protocol: 'opcua', status: 'done', targetsTotal: 1, found: 1 });
    expect(targets).toEqual([expect.objectContaining({ target: only.endpointUrl, source: 'endpoint', status: 'found' })]);
    const events = out.events.filter((e) => e.runId === run.id);
    expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1));
    expect(events[0]!.event).toBe('run');
    expect(events.at(-1)!.event).toBe('end');
    const progress = events.filter((e) => e.event === 'progress').map((e) => e.data);
    expect(progress.map((p) => p.phase)).toEqual(['listing', 'probing', 'probing', 'done']);
    const done = progress.map((p) => p.done!);
    expect(done).toEqual([...done].sort((a, b) => a - b));
    expect(progress.at(-1)).toMatchObject({ total: 1, done: 1, found: 1 });
    const shown = (await inventory()).find((d) => d.id === targets[0]!.deviceId);
    expect(out.devices).toEqual([expect.objectContaining({ id: shown!.id, state: shown!.state, nameplate: shown!.nameplate })]);
  });

  it('reads the retained Homie announcements again in an MQTT run', async () => {
    const r = await cli('discover', '--mqtt', '--json');
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Discovered;
    expect(out.runs[0]!.targets).toEqual([
      expect.objectContaining({ target: 'mqtt:valve-9', source: 'announcement', status: 'found', deviceId: 'mqtt:valve-9' }),
    ]);
    expect(out.devices).toEqual([expect.objectContaining({ id: 'mqtt:valve-9', nameplate: expect.objectContaining({ displayName: 'Valve 9' }) })]);
  });

  it('refuses a target outside opcua.scan.ranges without starting a run, and cancels a run on request', async () => {
    const before = (JSON.parse((await cli('opcua', 'runs', '--json')).stdout) as Run[]).length;
    const refused = await cli('discover', '--target', 'opc.tcp://10.9.9.9:4840');
    expect(refused.code).toBe(64);
    expect(refused.stderr).toContain('TARGET_NOT_ALLOWED');
    // Only opc.tcp://IPv4:port: a host name or a user part could mean another address to another URL parser.
    for (const target of [
      'opc.tcp://localhost:4840',
      `opc.tcp://8.8.8.8:4840\\@127.0.0.1:${servers[0]!.port}`,
      `opc.tcp://x@127.0.0.1:${servers[0]!.port}`,
      'opc.tcp://127.0.0.1:4840',
      '10.0.0.0/',
    ]) {
      const r = await cli('discover', '--target', target);
      expect(r.code, target).toBe(64);
      expect(r.stderr, target).toMatch(/TARGET_NOT_ALLOWED: .*(without a host name or user part|not one of opcua.scan.ports|prefix length)/);
    }
    expect((JSON.parse((await cli('opcua', 'runs', '--json')).stdout) as Run[]).length).toBe(before);
    // A server that accepts and never answers keeps the probe busy for opcua.timeoutMs: the run is cancelled meanwhile.
    // 3 s left too little time for two CLI runs on a loaded machine: 15 s from here on (a live key).
    const from = daemon.logs.length;
    writeFileSync(config, readFileSync(config, 'utf8').replace('timeoutMs: 3000', 'timeoutMs: 15000'));
    daemon.kill('SIGHUP');
    expect((await daemon.waitForLog((l) => l.msg === 'configuration reloaded', 15_000, from)).changed).toEqual(['opcua.timeoutMs']);
    const api = `http://127.0.0.1:${String(daemon.logs.find((l) => l.msg === 'http listening')!.port)}`;
    const admin = { authorization: `Bearer ${readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim()}` };
    const following = cli('discover', '--opcua', '--target', hanging.endpointUrl, '--json');
    // Found through the API: a CLI run per look would eat the window.
    const id = await pollUntil(
      async () =>
        ((await (await fetch(`${api}/api/v1/discovery/runs`, { headers: admin })).json()) as { items: Run[] }).items.find((x) => x.status === 'running')?.id,
      { timeoutMs: 30_000, message: () => 'the run never started' },
    );
    const cancel = await cli('discover', '--cancel', String(id), '--json');
    const followed = await following;
    expect(followed.code).toBe(1);
    const seen = JSON.parse(followed.stdout) as Discovered;
    expect(seen.runs[0]!.run).toMatchObject({ id, status: 'failed', error: 'cancelled by admin', cancelledBy: 'admin' });
    expect(seen.events.filter((e) => e.event === 'progress').at(-1)?.data.phase).toBe('cancelled');
    expect(cancel.code, cancel.stderr).toBe(1);
    expect((JSON.parse(cancel.stdout) as Discovered).runs[0]!.run.status).toBe('failed');
    const again = await cli('discover', '--cancel', String(id));
    expect(again.stderr).toContain('RUN_ENDED');
  });
});
