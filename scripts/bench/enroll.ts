import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { freePort, findMosquitto } from '../lib/local.js';
import { simulateDevices } from '../simulate/mqttDevices.js';
import type { BenchResult } from './result.js';

const DEVICES = 1_000;
const CONCURRENCY = 50;
const MAIN = resolve(fileURLToPath(new URL('../../agent/main.js', import.meta.url)));
const fmt = (v: number) => Math.round(v).toLocaleString('en-US');

/** Starts a process and resolves once a line of its output matches. */
function startUntil(command: string, args: string[], ready: RegExp, what: string): Promise<ChildProcess> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let seen = '';
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL'); // never leave it behind
      fail(new Error(`${what} did not become ready: ${seen.slice(-2000)}`));
    }, 60_000);
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        seen += `${line}\n`;
        if (ready.test(line)) {
          clearTimeout(timer);
          ok(child);
        }
      });
    }
    child.once('exit', (code) => fail(new Error(`${what} exited (${code}): ${seen.slice(-2000)}`)));
  });
}

/** User + system CPU time of a process so far, in seconds (Linux /proc). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .replace(/^.*\) /, '')
    .split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Polls /readyz (the daemon logs at warn here, so there is no ready line to wait for). */
async function untilReady(url: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`edge-agent exited (${child.exitCode})`);
    const ok = await fetch(url).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new Error('edge-agent did not become ready in 60 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

const cli = (config: string, ...args: string[]) => execFileSync(process.execPath, [MAIN, ...args, '--config', config], { encoding: 'utf8' });

/**
 * End-to-end MQTT enrollment through a real Mosquitto: 1,000 simulated
 * devices each make a P-256 key and CSR, publish their request (MQTT 5) on
 * the provisioning listener, receive the certificate the daemon issued,
 * and say hello on the mutual-TLS listener. Compared with the CA's own
 * issuance rate measured by the `ca` benchmark in the same `npm run bench`.
 */
export async function enrollBench(caRate: () => number | undefined): Promise<BenchResult[]> {
  const mosquitto = findMosquitto();
  if (!mosquitto) {
    return [
      {
        name: 'enroll: 1,000 devices through Mosquitto',
        value: 0,
        unit: 'enrollments/s',
        limit: 'not run: mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)',
      },
    ];
  }
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-enroll-'));
  const children: ChildProcess[] = [];
  try {
    const brokerDir = join(dir, 'broker');
    const config = join(dir, 'agent.yaml');
    const ports = { provisioning: await freePort(), mtls: await freePort(), http: await freePort() };
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
        `  brokerUrl: mqtts://127.0.0.1:${ports.mtls}`,
        `  mosquittoDir: ${brokerDir}`,
        `  mosquittoPidFile: ${join(brokerDir, 'mosquitto.pid')}`,
        '  limits: { perDeviceBurst: 3, perDeviceIntervalMs: 10000, globalPerSecond: 100000, queueSize: 100000, workers: 8 }',
        '',
      ].join('\n'),
    );
    cli(config, 'ca', 'init');
    cli(config, 'broker', 'mosquitto-config', '--out', brokerDir, '--provisioning-port', String(ports.provisioning), '--mtls-port', String(ports.mtls));
    // The benchmark's own broker runs as the invoking user (as root it would otherwise drop to mosquitto and not read DIR).
    appendFileSync(join(brokerDir, 'mosquitto.conf'), `pid_file ${join(brokerDir, 'mosquitto.pid')}\nuser ${userInfo().username}\nmax_queued_messages 10000\n`);
    children.push(await startUntil(mosquitto, ['-c', join(brokerDir, 'mosquitto.conf')], /mosquitto version [\d.]+ running/, 'mosquitto'));
    const token = JSON.parse(cli(config, 'devices', 'token', 'create', '--uses', String(DEVICES + 50), '--expires', '1h', '--json', '--local')) as {
      token: string;
    };
    // BENCH_AGENT_PROFILE=DIR: the agent writes a V8 CPU profile there when it stops (open it in Chrome DevTools).
    const profile = process.env.BENCH_AGENT_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${resolve(process.env.BENCH_AGENT_PROFILE)}`] : [];
    const agent = spawn(process.execPath, [...profile, MAIN, 'run', '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(agent);
    await untilReady(`http://127.0.0.1:${ports.http}/readyz`, agent);
    const common = {
      provisioningUrl: `mqtts://127.0.0.1:${ports.provisioning}`,
      caFile: join(brokerDir, 'ca.pem'),
      token: token.token,
      protocolVersion: 5 as const,
      concurrency: CONCURRENCY,
      timeoutMs: 60_000,
    };
    await simulateDevices({ ...common, count: 50, idPrefix: 'warm-' });
    const cpuBefore = { self: process.cpuUsage(), agent: cpuSeconds(agent.pid!), broker: cpuSeconds(children[0]!.pid!) };
    const result = await simulateDevices({ ...common, count: DEVICES, idPrefix: 'bench-' });
    const seconds = result.durationMs / 1000;
    const share = (used: number) => `${Math.round((used / seconds) * 100)}%`;
    const cpu = {
      devices: share((process.cpuUsage(cpuBefore.self).user + process.cpuUsage(cpuBefore.self).system) / 1e6),
      agent: share(cpuSeconds(agent.pid!) - cpuBefore.agent),
      agentPerCore: DEVICES / Math.max(0.01, cpuSeconds(agent.pid!) - cpuBefore.agent),
      broker: share(cpuSeconds(children[0]!.pid!) - cpuBefore.broker),
    };
    if (result.counts.issued !== DEVICES) {
      const first = result.devices.find((d) => d.status !== 'issued');
      throw new Error(`only ${result.counts.issued} of ${DEVICES} devices enrolled; first problem: ${first?.id} ${first?.status} ${first?.reason ?? ''}`);
    }
    const p = (key: 'enrolledMs' | 'connectedMs', q: number) => {
      const v = result.devices.map((d) => d[key] ?? 0).sort((a, b) => a - b);
      return v[Math.min(v.length - 1, Math.floor((v.length * q) / 100))]!;
    };
    const ca = caRate();
    return [
      {
        name: `enroll: ${fmt(DEVICES)} devices through Mosquitto (MQTT 5, ${CONCURRENCY} at once)`,
        value: result.enrollmentsPerSecond,
        unit: 'enrollments/s',
        limit: [
          `CA issuance ${ca === undefined ? '(run with the ca bench)' : `${fmt(ca)}/s`} in the same run`,
          `enrollment p50 ${p('enrolledMs', 50)} ms, p95 ${p('enrolledMs', 95)} ms`,
          `mTLS hello p50 ${p('connectedMs', 50)} ms`,
          `CPU of one core: simulated devices ${cpu.devices}, agent ${cpu.agent}` +
            ` (${fmt(cpu.agentPerCore)} enrollments per agent CPU-second), Mosquitto ${cpu.broker}`,
        ].join('; '),
      },
    ];
  } finally {
    for (const child of children.reverse()) {
      if (child.exitCode === null && child.signalCode === null) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await gone;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
