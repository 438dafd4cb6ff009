import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { findMosquitto } from '../../scripts/lib/local.js';
import { Waiters } from './waiters.js';

const exec = promisify(execFile);

import { freePort } from '../../scripts/lib/local.js';

export { freePort };

/** Where mosquitto lives; the test fails with the install command when it is missing. */
export function mosquittoBinary(): string {
  const found = findMosquitto();
  if (!found) throw new Error('mosquitto is not installed (Debian: apt-get install -y mosquitto mosquitto-clients)');
  return found;
}

/** A real Mosquitto 2 broker run from a configuration file, for one test. */
export class Mosquitto {
  private output = '';
  private readonly arrivals = new Waiters();
  private constructor(private readonly child: ChildProcess) {
    const take = (d: Buffer) => {
      this.output += d.toString();
      this.arrivals.wake();
    };
    child.stdout!.on('data', take);
    child.stderr!.on('data', take);
    child.on('exit', () => this.arrivals.wake());
  }

  /**
   * Starts mosquitto with `conf` and waits until it says it runs. As root,
   * mosquitto drops to the `mosquitto` user, which must then own the
   * directory `edge-agent broker mosquitto-config` wrote (as its output tells
   * the operator: chown -R mosquitto DIR) and reach it through `parents`.
   */
  static async start(conf: string, brokerDir: string, parents: string[] = []): Promise<Mosquitto> {
    if (process.getuid?.() === 0) {
      const uid = Number(execFileSync('id', ['-u', 'mosquitto']).toString().trim());
      for (const entry of [brokerDir, ...readdirSync(brokerDir).map((f) => join(brokerDir, f))]) chownSync(entry, uid, 0);
      for (const parent of parents) chmodSync(parent, 0o711);
    }
    const broker = new Mosquitto(spawn(mosquittoBinary(), ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] }));
    await broker.waitForLog(/mosquitto version [\d.]+ running/, { timeoutMs: 10_000 });
    return broker;
  }

  /** Everything mosquitto wrote so far. What it writes about an event may come after the client saw the event: wait with waitForLog. */
  get log(): string {
    return this.output;
  }

  /** Where the log ends now: pass it as `since` to look only at what comes after. */
  mark(): number {
    return this.output.length;
  }

  /**
   * Resolves with the first log line matching `pattern` after offset
   * `since`, as soon as mosquitto writes it; rejects after `timeoutMs`
   * (with the log) or when mosquitto exits first.
   */
  waitForLog(pattern: RegExp, o: { since?: number; timeoutMs?: number } = {}): Promise<string> {
    const since = o.since ?? 0;
    return this.arrivals.until(
      () =>
        this.output
          .slice(since)
          .split('\n')
          .find((line) => pattern.test(line)),
      {
        timeoutMs: o.timeoutMs ?? 10_000,
        timeoutMessage: () => `mosquitto wrote no line matching ${pattern} in time; its log after the mark:\n${this.output.slice(since)}`,
        gone: () =>
          this.child.exitCode !== null || this.child.signalCode !== null
            ? `mosquitto exited before writing ${pattern}: ${this.output.slice(since)}`
            : undefined,
      },
    );
  }

  /** Sends SIGHUP, as `systemctl reload mosquitto` does, and waits until mosquitto says it reloaded. */
  async reload(): Promise<void> {
    const since = this.mark();
    this.child.kill('SIGHUP');
    await this.waitForLog(/Reloading config/, { since });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }
}

export interface ClientTls {
  cafile: string;
  cert?: string;
  key?: string;
}

function tlsArgs(port: number, tls: ClientTls, clientId?: string): string[] {
  return [
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    '--cafile',
    tls.cafile,
    ...(tls.cert ? ['--cert', tls.cert, '--key', tls.key!] : []),
    ...(clientId ? ['-i', clientId] : []),
  ];
}

/** mosquitto_pub: resolves with its exit code and output. */
export async function publish(
  port: number,
  tls: ClientTls,
  topic: string,
  message: string,
  clientId?: string,
  file?: string,
): Promise<{ code: number; output: string }> {
  try {
    const body = file ? ['-f', file] : ['-m', message];
    const { stdout, stderr } = await exec('mosquitto_pub', [...tlsArgs(port, tls, clientId), '-q', '1', '-t', topic, ...body], { timeout: 10_000 });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, output: (e.stdout ?? '') + (e.stderr ?? '') };
  }
}

/**
 * mosquitto_sub for the first `count` messages (topic and payload lines) or
 * until `seconds` pass. `ready` resolves once the subscription is in place.
 */
export function subscribe(port: number, tls: ClientTls, topic: string, o: { count?: number; seconds: number; clientId?: string }) {
  // stdbuf: mosquitto_sub block-buffers a pipe, which would hide the SUBACK until it exits.
  const child = spawn(
    'stdbuf',
    ['-oL', 'mosquitto_sub', ...tlsArgs(port, tls, o.clientId), '-q', '1', '-t', topic, '-v', '-C', String(o.count ?? 1), '-W', String(o.seconds), '-d'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let debug = '';
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      const text = d.toString();
      debug += text;
      for (const line of text.split('\n')) if (line && !line.startsWith('Client ') && !line.startsWith('Subscribed')) out += `${line}\n`;
      if (/received SUBACK/.test(debug)) resolve();
    });
    child.stderr.on('data', (d: Buffer) => (debug += d.toString()));
    child.on('exit', () => reject(new Error(`mosquitto_sub ended before subscribing: ${debug}`)));
  });
  ready.catch(() => undefined);
  const done = new Promise<string[]>((resolve) => child.on('exit', () => resolve(out.split('\n').filter(Boolean))));
  return { ready, done };
}

/**
 * An agent set up for the plant's Mosquitto, as an operator does it: the
 * configuration (`agentLines` plus the ca and mqtt sections naming the
 * broker), `ca init`, `broker mosquitto-config`, then Mosquitto started from
 * what it wrote. The daemon is left for the test to start.
 */
export async function agentWithMosquitto(
  tmpDir: string,
  agentLines: string[],
): Promise<{ config: string; broker: Mosquitto; ports: { provisioning: number; mtls: number }; dir: string }> {
  const { runCli } = await import('./daemon.js');
  const dir = join(tmpDir, 'broker');
  const ports = { provisioning: await freePort(), mtls: await freePort() };
  const config = join(tmpDir, 'agent.yaml');
  writeFileSync(
    config,
    [
      ...agentLines,
      'ca:',
      `  crlFile: ${join(dir, 'crl.pem')}`,
      'mqtt:',
      `  brokerUrl: mqtts://127.0.0.1:${ports.mtls}`,
      `  mosquittoDir: ${dir}`,
      `  mosquittoPidFile: ${join(dir, 'mosquitto.pid')}`,
      '  actionPollMs: 100',
      '',
    ].join('\n'),
  );
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const init = await cli('ca', 'init');
  if (init.code !== 0) throw new Error(`ca init failed: ${init.stderr}`);
  const written = await cli('broker', 'mosquitto-config', '--out', dir, '--provisioning-port', String(ports.provisioning), '--mtls-port', String(ports.mtls));
  if (written.code !== 0) throw new Error(`broker mosquitto-config failed: ${written.stderr}`);
  appendFileSync(join(dir, 'mosquitto.conf'), `pid_file ${join(dir, 'mosquitto.pid')}\n`);
  return { config, broker: await Mosquitto.start(join(dir, 'mosquitto.conf'), dir, [tmpDir]), ports, dir };
}
