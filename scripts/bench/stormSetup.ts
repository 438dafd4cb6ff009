/**
 * One gateway for the reconnect-storm benchmark, on its own data directory:
 * the real daemon with the embedded broker, or with a real Mosquitto that
 * `edge-agent broker mosquitto-config` configured, and `count` devices
 * enrolled through the real MQTT enrollment path, each with its key and
 * certificate on disk (outside the timed part).
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, stopChild } from '../lib/local.js';
import { simulateDevices } from '../simulate/mqttDevices.js';
import { AGENT_MAIN as MAIN, spawnAgent, startBenchMosquitto, untilReady } from './benchDaemon.js';
import type { StormDevice } from './stormLoad.js';

export interface Gateway {
  kind: 'embedded' | 'mosquitto';
  agent: ChildProcess;
  /** The Mosquitto process, with kind 'mosquitto'. */
  mosquitto?: ChildProcess;
  /** The local API, and an admin token for it. */
  base: string;
  adminToken: string;
  /** The devices' mutual-TLS listener. */
  mtlsPort: number;
  /** What enrolls one more device on this gateway (for enrollments during the storm). */
  enroll: (count: number, idPrefix: string) => ReturnType<typeof simulateDevices>;
  /** The trust bundle the broker's certificate is verified against, and the broker's key and certificate files. */
  files: { ca: string; serverKey: string; serverCert: string };
  devices: StormDevice[];
  /** Every process it started, to stop in reverse. */
  children: ChildProcess[];
}

/** The first file called `name` under `dir`. */
function findFile(dir: string, name: string): string {
  for (const entry of readdirSync(dir, { recursive: true, encoding: 'utf8' })) if (entry.endsWith(`/${name}`) || entry === name) return join(dir, entry);
  throw new Error(`no ${name} under ${dir}`);
}

/**
 * Starts a gateway in `dir` and enrolls `count` devices (ids `storm-00000`…),
 * unless `enrolled` holds the devices a gateway on the same data directory
 * enrolled before (the same gateway restarted with the other broker: same
 * CA, same inventory, same device certificates). The processes are pushed to
 * `children` as they start, so a failure half way still leaves them to the
 * caller to stop.
 */
export async function startGateway(
  kind: Gateway['kind'],
  dir: string,
  count: number,
  mosquittoBin: string | undefined,
  children: ChildProcess[],
  enrolled?: StormDevice[],
): Promise<Gateway> {
  const config = join(dir, 'agent.yaml');
  const brokerDir = join(dir, 'broker');
  const dataDir = join(dir, 'data');
  const ports = { provisioning: await freePort(), mtls: await freePort(), http: await freePort() };
  const mqtt =
    kind === 'mosquitto'
      ? [`  brokerUrl: mqtts://127.0.0.1:${ports.mtls}`, `  mosquittoDir: ${brokerDir}`, `  mosquittoPidFile: ${join(brokerDir, 'mosquitto.pid')}`]
      : [`  provisioningPort: ${ports.provisioning}`, `  mtlsPort: ${ports.mtls}`];
  writeFileSync(
    config,
    [
      'agent:',
      `  id: gw-storm-${kind}`,
      `  dataDir: ${dataDir}`,
      'log:',
      '  level: warn',
      'http:',
      `  port: ${ports.http}`,
      ...(kind === 'mosquitto' || existsSync(brokerDir) ? ['ca:', `  crlFile: ${join(brokerDir, 'crl.pem')}`] : []),
      'opcua:',
      '  enabled: false',
      'mqtt:',
      ...mqtt,
      '  limits: { perDeviceBurst: 3, perDeviceIntervalMs: 10000, globalPerSecond: 100000, queueSize: 100000, workers: 8 }',
      '',
    ].join('\n'),
  );
  const cli = (...args: string[]) => execFileSync(process.execPath, [MAIN, ...args, '--config', config], { encoding: 'utf8' });
  if (!existsSync(join(dataDir, 'ca'))) cli('ca', 'init');
  let mosquitto: ChildProcess | undefined;
  if (kind === 'mosquitto') {
    if (!mosquittoBin) throw new Error('mosquitto is not installed');
    cli('broker', 'mosquitto-config', '--out', brokerDir, '--provisioning-port', String(ports.provisioning), '--mtls-port', String(ports.mtls));
    mosquitto = await startBenchMosquitto(mosquittoBin, brokerDir);
    children.push(mosquitto);
  }
  const agent = spawnAgent(config); // BENCH_AGENT_PROFILE=DIR: it writes a CPU profile there as it stops
  children.push(agent);
  const base = `http://127.0.0.1:${ports.http}`;
  await untilReady(`${base}/readyz`, agent, 90_000);
  // Through the running daemon's API (admin.token in the data directory): the database exists only once it has started.
  const token = (JSON.parse(cli('devices', 'token', 'create', '--uses', String(count + 100), '--expires', '2h', '--json')) as { token: string }).token;
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, await (await fetch(`${base}/ca/chain`)).text());
  const devicesDir = join(dir, 'devices');
  const enroll = (n: number, idPrefix: string) =>
    simulateDevices({
      provisioningUrl: `mqtts://127.0.0.1:${ports.provisioning}`,
      caFile,
      token,
      protocolVersion: 4,
      count: n,
      concurrency: Math.min(n, 50),
      idPrefix,
      skipMtls: true,
      timeoutMs: 120_000,
      outDir: devicesDir,
    });
  const devices = enrolled ?? (await enrollAll(enroll, count, devicesDir));
  const files =
    kind === 'mosquitto'
      ? { ca: caFile, serverKey: join(brokerDir, 'server.key'), serverCert: join(brokerDir, 'server.crt') }
      : { ca: caFile, serverKey: findFile(dataDir, 'broker-server.key'), serverCert: findFile(dataDir, 'broker-server.crt') };
  return {
    kind,
    agent,
    ...(mosquitto ? { mosquitto } : {}),
    base,
    adminToken: readFileSync(join(dataDir, 'admin.token'), 'utf8').trim(),
    mtlsPort: ports.mtls,
    enroll,
    files,
    devices,
    children,
  };
}

/** Enrolls `count` devices through the real path and reads back each one's key and certificate chain. */
async function enrollAll(enroll: Gateway['enroll'], count: number, devicesDir: string): Promise<StormDevice[]> {
  const enrolled = await enroll(count, 'storm-');
  if (enrolled.counts.issued !== count) {
    const first = enrolled.devices.find((d) => d.status !== 'issued');
    throw new Error(`only ${enrolled.counts.issued} of ${count} devices enrolled; first problem: ${first?.id} ${first?.status} ${first?.reason ?? ''}`);
  }
  return enrolled.devices.map((d) => {
    const at = join(devicesDir, d.id);
    const chain = join(at, 'chain.pem');
    return {
      id: d.id,
      key: readFileSync(join(at, 'key.pem'), 'utf8'),
      cert: readFileSync(join(at, 'cert.pem'), 'utf8') + (existsSync(chain) ? readFileSync(chain, 'utf8') : ''),
    };
  });
}

/** Stops the processes in reverse start order and waits for each to exit. */
export async function stopAll(children: ChildProcess[]): Promise<void> {
  for (const child of [...children].reverse()) await stopChild(child);
}
