/**
 * What the reconnect-storm benchmark watches in the agent while the storm
 * runs: the latency of its local API (an anonymous /healthz and an
 * authenticated device read, one request at a time), and its memory and CPU
 * from /proc. The same sampler runs before the storm for comparison.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { percentile } from './stormLoad.js';

export interface ApiSamples {
  /** Milliseconds per answer, sorted. */
  health: number[];
  device: number[];
  /** Requests that failed or answered other than 200. */
  errors: number;
}

const PAUSE_MS = 25;
const REQUEST_TIMEOUT_MS = 30_000;

async function timed(url: string, headers: Record<string, string>): Promise<number | undefined> {
  const t0 = performance.now();
  try {
    const res = await fetch(url, { headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    await res.arrayBuffer();
    return res.status === 200 ? performance.now() - t0 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Samples `GET /healthz` and `GET /api/v1/devices/mqtt:{device}` in turn
 * until `signal` aborts (the round under way completes).
 */
export async function sampleApi(base: string, token: string, device: string, signal: AbortSignal): Promise<ApiSamples> {
  const out: ApiSamples = { health: [], device: [], errors: 0 };
  while (!signal.aborted) {
    const h = await timed(`${base}/healthz`, {});
    const d = await timed(`${base}/api/v1/devices/mqtt:${device}`, { authorization: `Bearer ${token}` });
    for (const [v, into] of [
      [h, out.health],
      [d, out.device],
    ] as const) {
      if (v === undefined) out.errors++;
      else into.push(v);
    }
    await new Promise((r) => setTimeout(r, PAUSE_MS));
  }
  out.health.sort((a, b) => a - b);
  out.device.sort((a, b) => a - b);
  return out;
}

/** Samples for `ms` milliseconds. */
export async function sampleApiFor(base: string, token: string, device: string, ms: number): Promise<ApiSamples> {
  return sampleApi(base, token, device, AbortSignal.timeout(ms));
}

const ms = (v: number) => (v < 10 ? v.toFixed(1) : Math.round(v).toString());

/** "p50 a / max b ms (n)" of one series. */
export function describeLatency(sorted: number[]): string {
  if (sorted.length === 0) return 'no answer';
  return `p50 ${ms(percentile(sorted, 50))} / max ${ms(sorted.at(-1)!)} ms`;
}

/** Resident set now and its peak since the last resetPeak, in MiB (Linux /proc). */
export function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

/** Starts the peak (VmHWM) afresh from the current RSS: writing 5 to clear_refs (Linux ≥ 4.0, own processes). */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** User + system CPU time of a process so far, in seconds (Linux /proc). */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .replace(/^.*\) /, '')
    .split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
