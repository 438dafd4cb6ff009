/**
 * Simulated MQTT devices that enroll with the agent the way a real device
 * does: make a P-256 key and CSR, ask on the provisioning listener, wait for
 * the certificate, then connect with it to the mutual-TLS listener and say
 * hello (one device's flow: mqttDevice.ts). With `configuration`, each device
 * then stays connected, subscribed to its desired configuration, and applies
 * or refuses what the agent publishes (configDevice.ts). With `workers` the
 * devices are shared among worker threads (mqttDevicesThreads.ts), so that
 * the simulator is not what limits a benchmark. Tests and the benchmark
 * import `simulateDevices`; as a script it is `scripts/simulate/mqtt-devices`
 * (mqttDevicesCli.ts; see --help).
 */
import { setMaxListeners } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createSecureContext } from 'node:tls';
import { Worker } from 'node:worker_threads';
import { DEVICE_ID_PATTERN } from '../../certs/profiles/deviceId.js';
import { UsageError } from '../../agent/errors.js';
import type { ConfiguredDevice, DeviceConfigOptions } from './configDevice.js';
import { prepareDevice, runDevice, urlProblem, type DeviceContext, type DeviceResult, type DeviceStatus, type PreparedDevice } from './mqttDevice.js';

export type { DeviceResult, DeviceStatus, PreparedDevice } from './mqttDevice.js';

export interface SimulationOptions {
  /** mqtt:// or mqtts:// address of the provisioning listener. */
  provisioningUrl: string;
  /** PEM bundle the brokers' certificates are verified against; needed for any TLS connection. */
  caFile?: string;
  /** Mutual-TLS listener to use instead of the brokerUrl of the answer. */
  mtlsUrl?: string;
  count?: number;
  /** Devices running at once, all worker threads together. */
  concurrency?: number;
  /**
   * Worker threads sharing the devices (each gets a contiguous block of ids
   * and its share of the concurrency); 1 runs them in the caller's thread.
   * The results come back merged, in device order. Not with `configuration`
   * (its devices are objects that live in the caller's thread).
   */
  workers?: number;
  /**
   * Make every device's key and CSR before the clock starts (each thread its
   * own), so that durationMs and enrollmentsPerSecond measure enrollment
   * alone; `prepareMs` in the result says what it took. Otherwise each
   * device makes them at its start, inside the timed part, as a device does.
   */
  pregenerate?: boolean;
  /**
   * After its hello, each device disconnects and connects again this many
   * times to the mutual-TLS listener, a hello each time (a device that drops
   * its connection to sleep or on a network blip).
   */
  reconnects?: number;
  /**
   * Each reconnection offers the TLS session of the device's previous
   * connection to the same listener (TLSSocket.isSessionReused() tells
   * whether the broker resumed it: `resumed` in the results). Never across
   * devices, nor from the provisioning listener to the mutual-TLS one: a
   * real device cannot do either. With `configuration`, the configuration
   * connection resumes the hello's session too.
   */
  resumeTls?: boolean;
  idPrefix?: string;
  startIndex?: number;
  topicPrefix?: string;
  /** Sent as enrollmentToken. */
  token?: string;
  manufacturer?: string;
  model?: string;
  protocolVersion?: 4 | 5;
  /** Budget for one device's whole flow, connections included. */
  timeoutMs?: number;
  /** Keep waiting after a `pending` answer (otherwise the device stops there as 'pending'). */
  waitForApproval?: boolean;
  /** Each issued device gets `{outDir}/{id}/` with key.pem (0600), cert.pem and, when the answer has a caChain, chain.pem. */
  outDir?: string;
  /** Stop after the certificate is issued: no mutual-TLS connection. */
  skipMtls?: boolean;
  /** Aborting fails the devices still running and ends the simulation early. */
  signal?: AbortSignal;
  /** Called in the caller's thread as the clock starts (after `pregenerate`): where a benchmark starts its CPU meters. */
  onStart?: () => void;
  /** Told each time the broker has taken a device's request (its PUBACK): a benchmark can wait until every request is queued. */
  onRequested?: () => void;
  /**
   * After the hello, each device stays connected over mutual TLS, subscribed
   * to its desired configuration, and applies or refuses it (configDevice.ts).
   * The devices keep running after simulateDevices returns: stop them with
   * `result.configured`.
   */
  configuration?: DeviceConfigOptions;
}

export interface SimulationResult {
  devices: DeviceResult[];
  counts: Record<DeviceStatus, number>;
  /** Wall time of the flows (with `pregenerate`, after the keys and CSRs were made). */
  durationMs: number;
  /** Devices that completed the whole flow per second of wall time. */
  enrollmentsPerSecond: number;
  /** Threads the devices ran in. */
  workers: number;
  /** With `pregenerate`: wall time spent making keys and CSRs before the clock started. */
  prepareMs?: number;
  /** With `configuration`: the devices that run, by id (each must be stopped). */
  configured?: Map<string, ConfiguredDevice>;
}

export const SIMULATION_DEFAULTS = {
  count: 1,
  concurrency: 10,
  workers: 1,
  pregenerate: false,
  reconnects: 0,
  resumeTls: false,
  idPrefix: 'sim-',
  startIndex: 0,
  topicPrefix: 'edge/prov/v1',
  manufacturer: 'Simulated Devices Inc.',
  model: 'SIM-1',
  protocolVersion: 4,
  timeoutMs: 30_000,
  waitForApproval: true,
  skipMtls: false,
} as const;

/** The agent's own rule for device ids (and MQTT client ids). */
export const DEVICE_ID = DEVICE_ID_PATTERN;

export function deviceId(prefix: string, index: number): string {
  return `${prefix}${String(index).padStart(5, '0')}`;
}

const integerProblem = (value: number | undefined, what: string, min: number, max: number): string | undefined =>
  value === undefined || (Number.isSafeInteger(value) && value >= min && value <= max)
    ? undefined
    : `${what} must be an integer from ${min} to ${max}, not ${value}`;

/** The defaults under the options; an option given as undefined takes its default too. */
export function withDefaults(options: SimulationOptions) {
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as SimulationOptions;
  return { ...SIMULATION_DEFAULTS, ...given };
}

/** Every problem with `options`, all at once; empty when they are usable. Reads only whether caFile exists. */
export function validateOptions(options: SimulationOptions): string[] {
  const o = withDefaults(options);
  const problems = [
    urlProblem(o.provisioningUrl, 'the provisioning URL', ['mqtt:', 'mqtts:']),
    urlProblem(o.mtlsUrl, 'the mutual-TLS URL', ['mqtts:']),
    integerProblem(o.count, 'the device count', 1, 1_000_000),
    integerProblem(o.concurrency, 'the concurrency', 1, 10_000),
    integerProblem(o.workers, 'the number of worker threads', 1, 64),
    integerProblem(o.reconnects, 'the number of reconnections', 0, 1_000),
    integerProblem(o.startIndex, 'the start index', 0, 1e12),
    integerProblem(o.timeoutMs, 'the per-device timeout', 100, 3_600_000),
  ];
  const tls = o.provisioningUrl.startsWith('mqtts:') || !o.skipMtls;
  if (o.caFile === undefined && tls) problems.push('a CA bundle (--ca FILE) is needed to verify the brokers over TLS');
  if (o.caFile !== undefined && !existsSync(o.caFile)) problems.push(`the CA bundle ${o.caFile} does not exist`);
  if (!/^[A-Za-z0-9._-]*$/.test(o.idPrefix)) problems.push(`the id prefix ${JSON.stringify(o.idPrefix)} may hold only letters, digits, '.', '_' and '-'`);
  else if (Number.isSafeInteger(o.startIndex + o.count) && deviceId(o.idPrefix, o.startIndex + o.count - 1).length > 64) {
    problems.push(`device ids must be at most 64 characters: ${deviceId(o.idPrefix, o.startIndex + o.count - 1)} is longer`);
  }
  if (!/^[^/+#\u0000]+(\/[^/+#\u0000]+)*$/.test(o.topicPrefix))
    problems.push(`the topic prefix ${JSON.stringify(o.topicPrefix)} must be non-empty topic levels without wildcards`);
  if (o.protocolVersion !== 4 && o.protocolVersion !== 5) problems.push(`the MQTT protocol version is 4 or 5, not ${String(o.protocolVersion)}`);
  if (o.token !== undefined && o.token.length === 0) problems.push('the enrollment token is empty');
  if (o.skipMtls && o.reconnects > 0) problems.push('reconnecting needs the mutual-TLS connection: leave out --skip-mtls');
  const c = options.configuration;
  if (c !== undefined) {
    if (o.skipMtls) problems.push('taking configuration needs the mutual-TLS connection: leave out --skip-mtls');
    if (o.workers > 1) problems.push('devices taking configuration run in one thread: leave out --workers');
    if (c.topicRoot !== undefined && !/^[A-Za-z0-9_-]{1,64}$/.test(c.topicRoot))
      problems.push(`the configuration topic root ${JSON.stringify(c.topicRoot)} must be one topic level of letters, digits, - and _`);
    if (typeof c.refuse === 'number' && !(c.refuse >= 0 && c.refuse <= 1))
      problems.push(`the fraction of refusing devices must be from 0 to 1, not ${c.refuse}`);
    if (Array.isArray(c.refuse) && c.refuse.some((id) => !DEVICE_ID.test(id))) problems.push('a refusing device id is not a device id');
    if (c.refuseError !== undefined && (c.refuseError.length === 0 || c.refuseError.length > 1024))
      problems.push('the refusal error must be 1 to 1024 characters');
  }
  for (const [what, value] of [
    ['manufacturer', o.manufacturer],
    ['model', o.model],
  ] as const) {
    if (value.length === 0 || value.length > 64) problems.push(`the ${what} must be 1 to 64 characters long`);
  }
  return problems.filter((p): p is string => p !== undefined);
}

/** The key and CSR of each device of the run (`ids`), in order, made now: the part `pregenerate` takes out of the timed flow. */
export function prepareDevices(ids: string[]): PreparedDevice[] {
  return ids.map(prepareDevice);
}

/** Counts and rate of merged device results over `durationMs` of wall time. */
export function summarise(devices: DeviceResult[], durationMs: number): Pick<SimulationResult, 'counts' | 'durationMs' | 'enrollmentsPerSecond'> {
  const counts: Record<DeviceStatus, number> = { issued: 0, pending: 0, rejected: 0, failed: 0 };
  for (const d of devices) counts[d.status]++;
  return { counts, durationMs: Math.round(durationMs), enrollmentsPerSecond: durationMs > 0 ? counts.issued / (durationMs / 1000) : 0 };
}

/** The CA bundle's text, checked to hold a certificate. */
export function readCa(caFile: string | undefined): string | undefined {
  const ca = caFile === undefined ? undefined : readFileSync(caFile, 'utf8');
  if (ca !== undefined && !ca.includes('-----BEGIN CERTIFICATE-----')) throw new UsageError(`the CA bundle ${caFile} holds no PEM certificate`);
  return ca;
}

/**
 * The devices of one thread: `count` from `startIndex`, at most
 * `concurrency` at a time. `ready` (when given) is awaited after the keys
 * are made and before the clock starts: the threads start together.
 */
export async function simulateHere(options: SimulationOptions, ready?: (prepareMs: number) => Promise<void>): Promise<Omit<SimulationResult, 'workers'>> {
  const { caFile, signal, onStart, onRequested, count, concurrency, idPrefix, startIndex, pregenerate, ...rest } = withDefaults(options);
  const ca = readCa(caFile);
  // One listener on the caller's signal; each running device listens on ours,
  // which may therefore have as many listeners as the concurrency.
  const all = new AbortController();
  setMaxListeners(concurrency + 1, all.signal);
  const abortAll = () => all.abort();
  if (signal?.aborted) all.abort();
  signal?.addEventListener('abort', abortAll, { once: true });
  const ctx: DeviceContext = {
    ...rest,
    ...(ca === undefined ? {} : { ca, provisioningTls: createSecureContext({ ca }) }),
    signal: all.signal,
    configured: new Map(),
    ...(onRequested ? { onRequested } : {}),
  };
  const ids = Array.from({ length: count }, (_, i) => deviceId(idPrefix, startIndex + i));
  const preparing = performance.now();
  const prepared = pregenerate ? prepareDevices(ids) : undefined;
  const prepareMs = pregenerate ? Math.round(performance.now() - preparing) : undefined;
  await ready?.(prepareMs ?? 0);
  onStart?.();
  const devices: DeviceResult[] = new Array(count);
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    for (let i = next++; i < count; i = next++) devices[i] = await runDevice(ids[i]!, i, ctx, prepared?.[i]);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  signal?.removeEventListener('abort', abortAll);
  return {
    devices,
    ...summarise(devices, performance.now() - started),
    ...(prepareMs === undefined ? {} : { prepareMs }),
    ...(ctx.configuration ? { configured: ctx.configured } : {}),
  };
}

/**
 * Runs `count` devices through enrollment, at most `concurrency` at a time,
 * in `workers` threads. Throws UsageError for unusable options; a device's
 * failure (a worker thread's too) is only ever recorded in its result.
 */
export async function simulateDevices(options: SimulationOptions): Promise<SimulationResult> {
  const problems = validateOptions(options);
  if (problems.length > 0) throw new UsageError(problems.join('; '), { details: { problems } });
  const o = withDefaults(options);
  const workers = Math.min(o.workers, o.count, o.concurrency);
  if (workers > 1) return simulateInThreads(options, workers);
  return { ...(await simulateHere(options)), workers: 1 };
}

/**
 * The worker thread's script. Under vitest this module runs from its
 * TypeScript source, which a worker thread cannot load (Node 20 has no type
 * stripping): it then runs the build, as the daemon tests do (npm run build).
 */
function workerScript(): URL {
  const fromSource = import.meta.url.endsWith('.ts');
  const script = new URL(fromSource ? '../../dist/scripts/simulate/mqttDevicesWorker.js' : './mqttDevicesWorker.js', import.meta.url);
  if (!existsSync(script)) throw new Error(`${script.pathname} is missing: run npm run build`);
  return script;
}

/** Messages from a worker thread (mqttDevicesWorker.ts); the caller sends it `go` once every thread is ready, or `abort`. */
export type WorkerMessage =
  | { type: 'ready'; prepareMs: number }
  | { type: 'requested' }
  | { type: 'done'; result: Omit<SimulationResult, 'workers' | 'configured'> };

/** `count` shared as evenly as possible in `parts`: [offset, size] of each. */
function share(count: number, parts: number): [number, number][] {
  return Array.from({ length: parts }, (_, k) => {
    const from = Math.floor((count * k) / parts);
    return [from, Math.floor((count * (k + 1)) / parts) - from];
  });
}

async function simulateInThreads(options: SimulationOptions, workers: number): Promise<SimulationResult> {
  const o = withDefaults(options);
  readCa(o.caFile);
  const script = workerScript();
  // What a thread cannot receive (functions, objects of this thread) stays here.
  const { signal, onStart, onRequested, configuration: _, ...plain } = options;
  const concurrency = share(o.concurrency, workers);
  let go!: () => void;
  const going = new Promise<void>((resolve) => (go = resolve));
  const threads = share(o.count, workers).map(([from, count], k) => {
    const slice = { ...plain, startIndex: o.startIndex + from, count, concurrency: concurrency[k]![1], workers: 1 };
    const worker = new Worker(script, { workerData: { options: slice, tellRequested: onRequested !== undefined } });
    let readied!: (prepareMs: number) => void;
    const ready = new Promise<number>((resolve) => (readied = resolve));
    const failed = (why: string): DeviceResult[] =>
      Array.from({ length: count }, (_, i) => ({ id: deviceId(o.idPrefix, slice.startIndex + i), status: 'failed' as const, reason: why }));
    const done = new Promise<DeviceResult[]>((resolve) => {
      let error: Error | undefined;
      worker.on('message', (m: WorkerMessage) => {
        if (m.type === 'ready') readied(m.prepareMs);
        else if (m.type === 'requested') onRequested?.();
        else resolve(m.result.devices);
      });
      worker.on('error', (err) => (error ??= err));
      worker.on('exit', (code) => {
        readied(0);
        resolve(failed(`the simulator's worker thread ${k + 1} ended (${error ? error.message : `exit code ${code}`})`));
      });
    });
    void going.then(() => worker.postMessage('go'));
    return { worker, ready, done };
  });
  const abort = () => {
    for (const t of threads) t.worker.postMessage('abort');
  };
  if (signal?.aborted) abort();
  signal?.addEventListener('abort', abort, { once: true });
  const prepareMs = Math.max(...(await Promise.all(threads.map((t) => t.ready))));
  onStart?.();
  const started = performance.now();
  go();
  const devices = (await Promise.all(threads.map((t) => t.done))).flat();
  const durationMs = performance.now() - started;
  signal?.removeEventListener('abort', abort);
  await Promise.all(threads.map((t) => t.worker.terminate()));
  return { devices, ...summarise(devices, durationMs), workers, ...(o.pregenerate ? { prepareMs } : {}) };
}
