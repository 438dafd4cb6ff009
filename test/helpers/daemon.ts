import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Waiters } from './waiters.js';

export const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const MAIN = join(REPO, 'dist/agent/main.js');

export type LogLine = Record<string, unknown> & { msg: string; level: string };

/** A temporary directory removed by `cleanup()`. */
export function tempDir(prefix = 'edge-agent-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A configuration for tests: data in `dir`, a free port, a fast heartbeat. */
export function writeConfig(dir: string, yaml?: string, name = 'edge-agent.yaml'): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    yaml ?? ['agent:', '  id: test-gw', `  dataDir: ${join(dir, 'data')}`, '  heartbeatIntervalMs: 200', 'http:', '  port: 0', ''].join('\n'),
  );
  return file;
}

/** Runs the built CLI to completion; `input`, when given, is its standard input (else it has none). */
export function runCli(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      cwd: options.cwd ?? REPO,
      env: { ...cleanEnv(), ...options.env },
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    // A CLI that stops reading early closes the pipe: that is its right, not the test's failure.
    child.stdin?.on('error', () => {});
    child.stdin?.end(options.input);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

/**
 * The test runner's environment without anything that would steer the agent
 * (a login session included), except that the embedded MQTT broker listens on ports the kernel picks:
 * tests run side by side, and the default ports 8883/8884 would collide. A
 * test that sets these in its file or its env overrides them.
 */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    EDGE_AGENT_MQTT_PROVISIONING_PORT: '0',
    EDGE_AGENT_MQTT_MTLS_PORT: '0',
    // Never the session of an edge-agent login made by whoever runs the tests (~/.config/edge-agent/session).
    EDGE_AGENT_SESSION_FILE: '/nonexistent/edge-agent-test-session',
  };
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('EDGE_AGENT_') && !['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID'].includes(k)) env[k] = v;
  }
  return env;
}

/** The real daemon as a child process, with its JSON log lines collected. */
export class Daemon {
  readonly logs: LogLine[] = [];
  stderr = '';
  /**
   * Resolves once the daemon has exited AND its stdout and stderr are read
   * to the end ('close', not 'exit': at 'exit' the last log lines and the
   * error message may still wait in the pipes), so `logs` and `stderr` are
   * complete when it resolves.
   */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private closed = false;
  private readonly waiters = new Waiters();

  private constructor(readonly child: ChildProcess) {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      try {
        this.logs.push(JSON.parse(line) as LogLine);
      } catch {
        this.logs.push({ msg: line, level: 'raw' });
      }
      this.waiters.wake();
    });
    child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.exited = new Promise((resolvePromise) =>
      child.on('close', (code, signal) => {
        this.closed = true;
        resolvePromise({ code, signal });
        this.waiters.wake();
      }),
    );
  }

  /** `prefix` runs the daemon through a command, such as `ip netns exec NAME` (which execs, keeping the PID). */
  static start(config: string, options: { env?: NodeJS.ProcessEnv; args?: string[]; prefix?: string[] } = {}): Daemon {
    const command = [...(options.prefix ?? []), process.execPath, MAIN, 'run', '--config', config, ...(options.args ?? [])];
    const child = spawn(command[0]!, command.slice(1), {
      cwd: REPO,
      env: { ...cleanEnv(), ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new Daemon(child);
  }

  /** Waits for a log line that matches; rejects if the daemon exits first or after `timeoutMs`. */
  waitForLog(match: (l: LogLine) => boolean, timeoutMs = 30_000, from = 0): Promise<LogLine> {
    return this.waiters.until(() => this.logs.slice(from).find(match), {
      timeoutMs,
      timeoutMessage: () => `timed out waiting for a log line; last: ${JSON.stringify(this.logs.slice(-5))}`,
      // Only once its output is read to the end: a line written just before the exit may still be in the pipe at 'exit'.
      gone: () => (this.closed ? `daemon exited (${this.child.exitCode ?? this.child.signalCode}) before the log line; stderr: ${this.stderr}` : undefined),
    });
  }

  /**
   * Waits for readiness and returns the base URL of the local listener. A
   * first start makes the CA (an RSA key among others): on a loaded 2-core
   * machine that alone has taken more than the 15 s this once allowed.
   */
  async ready(): Promise<string> {
    await this.waitForLog((l) => l.msg === 'edge-agent ready', 90_000);
    const listening = await this.waitForLog((l) => l.msg === 'http listening');
    return `http://127.0.0.1:${String(listening.port)}`;
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** Stops the daemon if it still runs (SIGKILL: for cleanup after a failed test only). */
  async dispose(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}
