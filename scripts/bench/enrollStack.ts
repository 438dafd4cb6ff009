/**
 * The daemon the enrollment benchmark (enroll.ts) measures, with its broker:
 * a real Mosquitto configured by `edge-agent broker mosquitto-config`, or the
 * agent's embedded broker (mqtt.brokerUrl empty). Everything in a temporary
 * directory, on 127.0.0.1, ports chosen at run time.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, stopChild } from '../lib/local.js';
import { AGENT_MAIN as MAIN, spawnAgent, startBenchMosquitto, untilReady } from './benchDaemon.js';

export interface EnrollStack {
  agent: ChildProcess;
  /** Mosquitto, when the stack uses it. */
  broker?: ChildProcess;
  provisioningUrl: string;
  caFile: string;
  /** An enrollment token with enough uses for the whole run. */
  token: string;
  /** Stops the daemon, then the broker (SIGTERM, waiting for each: the agent writes its CPU profile as it stops). */
  stop: () => Promise<void>;
}

/**
 * A fresh daemon under `dir` (which must exist) with `mosquitto` (its path)
 * or the embedded broker (undefined). `tokenUses`: enrollments the run needs.
 */
export async function startStack(dir: string, mosquitto: string | undefined, tokenUses: number): Promise<EnrollStack> {
  // The ports are free when chosen, but another process may take one before the daemon or Mosquitto
  // listens on it (seen once: EADDRINUSE on the HTTP port). A failed start is tried again, afresh.
  const failures: string[] = [];
  for (let attempt = 1; ; attempt++) {
    const into = join(dir, `stack-${attempt}`);
    mkdirSync(into);
    try {
      return await startOnce(into, mosquitto, tokenUses);
    } catch (err) {
      failures.push((err as Error).message);
      if (attempt === 3) throw new Error(`the stack did not start in 3 attempts: ${failures.join(' | ')}`);
    }
  }
}

async function startOnce(dir: string, mosquitto: string | undefined, tokenUses: number): Promise<EnrollStack> {
  const brokerDir = join(dir, 'broker');
  mkdirSync(brokerDir, { recursive: true });
  const config = join(dir, 'agent.yaml');
  const ports = { provisioning: await freePort(), mtls: await freePort(), http: await freePort() };
  const broker = mosquitto
    ? [`  brokerUrl: mqtts://127.0.0.1:${ports.mtls}`, `  mosquittoDir: ${brokerDir}`, `  mosquittoPidFile: ${join(brokerDir, 'mosquitto.pid')}`]
    : [`  provisioningPort: ${ports.provisioning}`, `  mtlsPort: ${ports.mtls}`];
  writeFileSync(
    config,
    [
      'agent:',
      '  id: gw-bench',
      `  dataDir: ${join(dir, 'data')}`,
      'log:',
      '  level: warn',
      'http:',
      `  port: ${ports.http}`,
      'ca:',
      `  crlFile: ${join(brokerDir, 'crl.pem')}`,
      'mqtt:',
      ...broker,
      // The rate limits opened for the load; workers (requests in flight, which share a commit) as by default.
      '  limits: { perDeviceBurst: 3, perDeviceIntervalMs: 10000, globalPerSecond: 100000, queueSize: 100000 }',
      '',
    ].join('\n'),
  );
  const cli = (...args: string[]) =>
    execFileSync(process.execPath, [MAIN, ...args, '--config', config], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const children: ChildProcess[] = [];
  const stop = async () => {
    for (const child of children.reverse()) await stopChild(child);
  };
  try {
    cli('ca', 'init');
    let brokerProcess: ChildProcess | undefined;
    if (mosquitto) {
      cli('broker', 'mosquitto-config', '--out', brokerDir, '--provisioning-port', String(ports.provisioning), '--mtls-port', String(ports.mtls));
      brokerProcess = await startBenchMosquitto(mosquitto, brokerDir);
      children.push(brokerProcess);
    }
    const agent = spawnAgent(config); // BENCH_AGENT_PROFILE=DIR: it writes a CPU profile there as it stops
    children.push(agent);
    const base = `http://127.0.0.1:${ports.http}`;
    await untilReady(`${base}/readyz`, agent);
    // After the start: without mosquitto-config (embedded broker) the database exists only once the daemon made it.
    const token = JSON.parse(cli('devices', 'token', 'create', '--uses', String(tokenUses), '--expires', '1h', '--json', '--local')) as { token: string };
    // The bundle mosquitto-config wrote, or the chain the daemon serves (which verifies its embedded listeners).
    const caFile = join(mosquitto ? brokerDir : dir, 'ca.pem');
    if (!mosquitto) writeFileSync(caFile, await (await fetch(`${base}/ca/chain`)).text());
    return {
      agent,
      ...(brokerProcess ? { broker: brokerProcess } : {}),
      provisioningUrl: `mqtts://127.0.0.1:${ports.provisioning}`,
      caFile,
      token: token.token,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
