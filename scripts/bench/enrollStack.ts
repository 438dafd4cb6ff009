/**
 * The daemon the enrollment benchmark (enroll.ts) measures, with its broker:
 * a real Mosquitto configured by `edge-agent broker mosquitto-config`, or the
 * agent's embedded broker (mqtt.brokerUrl empty). Everything in a temporary
 * directory, on 127.0.0.1, ports chosen at run time.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { freePort, stopChild } from '../lib/local.js';

const MAIN = resolve(fileURLToPath(new URL('../../agent/main.js', import.meta.url)));

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
      // The benchmark's own broker runs as the invoking user (as root it would otherwise drop to mosquitto and not read DIR).
      appendFileSync(
        join(brokerDir, 'mosquitto.conf'),
        `pid_file ${join(brokerDir, 'mosquitto.pid')}\nuser ${userInfo().username}\nmax_queued_messages 10000\n`,
      );
      brokerProcess = await startUntil(mosquitto, ['-c', join(brokerDir, 'mosquitto.conf')], /mosquitto version [\d.]+ running/, 'mosquitto');
      children.push(brokerProcess);
    }
    // BENCH_AGENT_PROFILE=DIR: the agent writes a V8 CPU profile there when it stops (open it in Chrome DevTools).
    const profile = process.env.BENCH_AGENT_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${resolve(process.env.BENCH_AGENT_PROFILE)}`] : [];
    const agent = spawn(process.execPath, [...profile, MAIN, 'run', '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
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
