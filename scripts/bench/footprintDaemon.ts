import { stopChild } from '../lib/local.js';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const MAIN = resolve(fileURLToPath(new URL('../../agent/main.js', import.meta.url)));

/** The daemon's configuration for the footprint bench: a plant's defaults, sync on to the reference receiver, listeners on free ports. */
export function writePlantConfig(dir: string, o: { id: string; receiverPort?: number; caFile?: string; tokenFile?: string }): string {
  const file = join(dir, `${o.id}.yaml`);
  writeFileSync(
    file,
    [
      'agent:',
      `  id: ${o.id}`,
      `  dataDir: ${join(dir, o.id)}`,
      'http:',
      '  port: 0',
      'mqtt:',
      '  provisioningPort: 0',
      '  mtlsPort: 0',
      ...(o.receiverPort === undefined
        ? []
        : ['sync:', '  enabled: true', `  baseUrl: https://127.0.0.1:${o.receiverPort}`, `  caFile: ${o.caFile}`, `  tokenFile: ${o.tokenFile}`]),
      '',
    ].join('\n'),
  );
  return file;
}

/** Memory of a process from /proc/PID/status, in MB. */
export interface Memory {
  rss: number;
  hwm: number;
  anon: number;
  file: number;
}

export function memoryOf(pid: number): Memory {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN) / 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM'), anon: kb('RssAnon'), file: kb('RssFile') };
}

/** User + system CPU seconds of a process so far (Linux /proc). */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .replace(/^.*\) /, '')
    .split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface DgramSocket {
  bind(path: string): void;
  close(): void;
  on(event: 'message', listener: (buf: Buffer) => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
}

/** One start of the daemon, measured. */
export interface StartFigures {
  /** Spawn to READY=1, ms. */
  readyMs: number;
  /** Spawn to each systemd STATUS "Starting <service>" (ms), in order: what each step of the start took. */
  steps: { name: string; atMs: number }[];
  atReady: Memory;
  /** After the settle period: the first report evaluation, configuration reconcile and sync reconcile have run. */
  settled: Memory;
  settleMs: number;
  /** CPU seconds the daemon used from spawn to READY, and to the end of the settle period. */
  cpuAtReady: number;
  cpuSettled: number;
}

/**
 * Starts the built daemon with NOTIFY_SOCKET on a real AF_UNIX datagram
 * socket (as systemd would: READY=1 comes once every service is up), times
 * READY=1 from spawn, reads its memory at READY and again once it has
 * settled (at least `settleMs`, and then until it used under 2% of a core
 * over a second, at most 60 s more), and stops it with SIGTERM.
 */
export async function measureStart(config: string, dir: string, o: { settleMs: number; args?: string[] }): Promise<StartFigures> {
  const require = createRequire(import.meta.url);
  const unix = require('unix-dgram') as { createSocket(type: 'unix_dgram'): DgramSocket };
  const path = join(dir, `notify-${process.pid}-${Date.now()}.sock`);
  const socket = unix.createSocket('unix_dgram');
  const steps: { name: string; atMs: number }[] = [];
  let ready: (() => void) | undefined;
  let t0 = 0;
  socket.on('error', () => {});
  socket.on('message', (buf) => {
    const at = performance.now() - t0;
    const fields = Object.fromEntries(
      buf
        .toString()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    const starting = /^Starting (\S+)$/.exec(fields.STATUS ?? '');
    if (starting) steps.push({ name: starting[1]!, atMs: at });
    if (fields.READY === '1') {
      steps.push({ name: 'READY', atMs: at });
      ready?.();
    }
  });
  socket.bind(path);
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, NOTIFY_SOCKET: path };
  t0 = performance.now();
  const child = spawn(process.execPath, [...(o.args ?? []), MAIN, 'run', '--config', config], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    await new Promise<void>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`no READY=1 in 120 s: ${stderr.slice(-2000)}`)), 120_000);
      ready = () => (clearTimeout(timer), ok());
      child.once('exit', (code) => (clearTimeout(timer), fail(new Error(`the daemon exited (${code}) before READY=1: ${stderr.slice(-2000)}`))));
    });
    const readyMs = steps.at(-1)!.atMs;
    const pid = child.pid!;
    const atReady = memoryOf(pid);
    const cpuAtReady = cpuSeconds(pid);
    const settleFrom = performance.now();
    await new Promise((r) => setTimeout(r, o.settleMs));
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; ) {
      const before = cpuSeconds(pid);
      await new Promise((r) => setTimeout(r, 1_000));
      if (cpuSeconds(pid) - before < 0.02) break;
    }
    return { readyMs, steps, atReady, settled: memoryOf(pid), settleMs: performance.now() - settleFrom, cpuAtReady, cpuSettled: cpuSeconds(pid) };
  } finally {
    await stopChild(child);
    await exited;
    socket.close();
  }
}
