/**
 * Starting the processes a benchmark measures: the daemon (with a CPU
 * profile on request), a Mosquitto configured by `edge-agent broker
 * mosquitto-config`, and waiting for each to be ready with a deadline.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The daemon's entry point in the built tree. */
export const AGENT_MAIN = resolve(fileURLToPath(new URL('../../agent/main.js', import.meta.url)));

/** BENCH_AGENT_PROFILE=DIR: node flags that make the agent write a V8 CPU profile there when it stops (open it in Chrome DevTools). */
export function agentProfileFlags(): string[] {
  return process.env.BENCH_AGENT_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${resolve(process.env.BENCH_AGENT_PROFILE)}`] : [];
}

/** `edge-agent run --config FILE` (its log at warn goes to the bench's stderr). */
export function spawnAgent(config: string): ChildProcess {
  return spawn(process.execPath, [...agentProfileFlags(), AGENT_MAIN, 'run', '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
}

/** Starts a process and resolves once a line of its output matches; kills it if none does within 60 s. */
export function startUntil(command: string, args: string[], ready: RegExp, what: string): Promise<ChildProcess> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let seen = '';
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL'); // never leave it behind
      fail(new Error(`${what} did not become ready: ${seen.slice(-2000)}`));
    }, 60_000);
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        if (seen.length < 100_000) seen += `${line}\n`;
        if (ready.test(line)) {
          clearTimeout(timer);
          ok(child);
        }
      });
    }
    child.once('exit', (code) => fail(new Error(`${what} exited (${code}): ${seen.slice(-2000)}`)));
  });
}

/**
 * The Mosquitto that `edge-agent broker mosquitto-config --out brokerDir`
 * configured, run as the invoking user (as root it would drop to mosquitto
 * and not read the directory), with room for the queued requests of a
 * backlog.
 */
export function startBenchMosquitto(mosquitto: string, brokerDir: string): Promise<ChildProcess> {
  const conf = join(brokerDir, 'mosquitto.conf');
  appendFileSync(conf, `pid_file ${join(brokerDir, 'mosquitto.pid')}\nuser ${userInfo().username}\nmax_queued_messages 10000\n`);
  return startUntil(mosquitto, ['-c', conf], /mosquitto version [\d.]+ running/, 'mosquitto');
}

/** Polls the daemon's /readyz (it logs at warn in the benches, so there is no ready line to wait for). */
export async function untilReady(url: string, child: ChildProcess, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`edge-agent exited (${child.exitCode})`);
    const ok = await fetch(url).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`edge-agent did not become ready in ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
