/**
 * The reconnect-storm load generator: the devices spread over worker threads
 * (stormClients.ts), all started at the same instant. `storm()` resolves once
 * every device is done or given up, with the connections still open, so the
 * caller can look at the server while it holds them; `release()` then closes
 * them.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { StormCommand, StormWorkerData, StormWorkerResult } from './stormClients.js';

export interface StormDevice {
  id: string;
  key: string;
  cert: string;
}

export interface StormOptions {
  mode: 'mqtt' | 'tls';
  host: string;
  port: number;
  ca: string;
  devices: StormDevice[];
  /** Worker threads; by default one per core, at most 4. */
  threads?: number;
  attemptTimeoutMs?: number;
  deadlineMs?: number;
  /** Called at the instant the devices are told to start (after the workers loaded their keys): for the caller's own clocks. */
  onStart?: () => void;
}

export interface StormOutcome {
  /** From the common start to the last device done. */
  seconds: number;
  done: number;
  failed: number;
  /** Attempts beyond the first, over all devices. */
  retries: number;
  /** Per-device time from the start to done, sorted, in milliseconds. */
  doneMs: number[];
  /** A failure, for the report. */
  firstError?: string;
  /** Failed attempts by error message, most frequent first. */
  errors: [string, number][];
  /** CPU seconds this process (the worker threads, mostly) used from the start to the last device done. */
  cpuSeconds: number;
  threads: number;
  /** Closes every connection; resolves with the devices the server dropped while they were held. */
  release: () => Promise<{ dropped: number }>;
}

const cpuNow = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** Resolves with the first message of `type` from the worker; rejects when it fails or exits first. */
function next<T>(worker: Worker, type: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { type: string }) => {
      if (m.type !== type) return;
      cleanup();
      resolve(m as T);
    };
    const onError = (err: Error) => (cleanup(), reject(err));
    const onExit = (code: number) => (cleanup(), reject(new Error(`storm worker exited (${code}) before '${type}'`)));
    const cleanup = () => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    worker.on('message', onMessage);
    worker.once('error', onError);
    worker.once('exit', onExit);
  });
}

export async function storm(o: StormOptions): Promise<StormOutcome> {
  const threads = Math.max(1, Math.min(o.threads ?? Math.min(4, availableParallelism()), o.devices.length));
  const shares: StormDevice[][] = Array.from({ length: threads }, () => []);
  for (const [i, d] of o.devices.entries()) shares[i % threads]!.push(d);
  const workers = shares.map(
    (devices) =>
      new Worker(new URL('./stormClients.js', import.meta.url), {
        workerData: {
          mode: o.mode,
          host: o.host,
          port: o.port,
          ca: o.ca,
          devices,
          attemptTimeoutMs: o.attemptTimeoutMs ?? 30_000,
          deadlineMs: o.deadlineMs ?? 180_000,
        } satisfies StormWorkerData,
      }),
  );
  const stopAll = () => Promise.all(workers.map((w) => w.terminate()));
  try {
    await Promise.all(workers.map((w) => next(w, 'ready')));
    const done = workers.map((w) => next<{ result: StormWorkerResult }>(w, 'done'));
    const at = performance.timeOrigin + performance.now() + 100;
    const cpuBefore = cpuNow();
    o.onStart?.();
    for (const w of workers) w.postMessage({ type: 'start', at } satisfies StormCommand);
    const reports = (await Promise.all(done)).map((m) => m.result);
    const results = reports.flatMap((r) => r.devices);
    const errors = new Map<string, number>();
    for (const [k, n] of reports.flatMap((r) => Object.entries(r.errors))) errors.set(k, (errors.get(k) ?? 0) + n);
    const cpuSeconds = cpuNow() - cpuBefore;
    const doneMs = results.filter((r) => r.doneAt !== undefined).map((r) => r.doneAt! - at);
    doneMs.sort((a, b) => a - b);
    const failed = results.filter((r) => r.doneAt === undefined);
    return {
      seconds: (doneMs.at(-1) ?? 0) / 1000,
      done: doneMs.length,
      failed: failed.length,
      retries: results.reduce((n, r) => n + r.attempts - 1, 0),
      doneMs,
      ...(failed[0] ? { firstError: `${failed[0].id}: ${failed[0].error}` } : {}),
      errors: [...errors].sort((a, b) => b[1] - a[1]),
      cpuSeconds,
      threads,
      release: async () => {
        const closed = workers.map((w) => next<{ dropped: number }>(w, 'closed'));
        for (const w of workers) w.postMessage({ type: 'close' } satisfies StormCommand);
        const dropped = (await Promise.all(closed)).reduce((n, m) => n + m.dropped, 0);
        await stopAll();
        return { dropped };
      },
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** The q-th percentile (0–100) of sorted values. */
export const percentile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * q) / 100))] ?? 0;
