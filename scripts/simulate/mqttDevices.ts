/**
 * Simulated MQTT devices that enroll with the agent the way a real device
 * does: make a P-256 key and CSR, ask on the provisioning listener, wait for
 * the certificate, then connect with it to the mutual-TLS listener and say
 * hello. With `configuration`, each device then stays connected, subscribed
 * to its desired configuration, and applies or refuses what the agent
 * publishes (configDevice.ts). Tests and the benchmark import
 * `simulateDevices`; as a script it is `scripts/simulate/mqtt-devices`
 * (mqttDevicesCli.ts; see --help).
 */
import { randomUUID, X509Certificate } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { DEVICE_ID_PATTERN } from '../../certs/profiles/deviceId.js';
import { UsageError } from '../../agent/errors.js';
import type { Answer } from '../../agent/onboarding/mqttEnrollment.js';
import { normaliseSerial } from '../../certs/authority.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { writeFileAtomic, writeKeyFile } from '../../certs/keys/fileKey.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import { ConfiguredDevice, refuses, type DeviceConfigOptions } from './configDevice.js';

export type DeviceStatus = 'issued' | 'pending' | 'rejected' | 'failed';

export interface SimulationOptions {
  /** mqtt:// or mqtts:// address of the provisioning listener. */
  provisioningUrl: string;
  /** PEM bundle the brokers' certificates are verified against; needed for any TLS connection. */
  caFile?: string;
  /** Mutual-TLS listener to use instead of the brokerUrl of the answer. */
  mtlsUrl?: string;
  count?: number;
  concurrency?: number;
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
  /**
   * After the hello, each device stays connected over mutual TLS, subscribed
   * to its desired configuration, and applies or refuses it (configDevice.ts).
   * The devices keep running after simulateDevices returns: stop them with
   * `result.configured`.
   */
  configuration?: DeviceConfigOptions;
}

export interface DeviceResult {
  id: string;
  /** 'issued' only when the whole flow completed (with skipMtls: when the certificate came). */
  status: DeviceStatus;
  reason?: string;
  /** From the device's start to the `issued` answer. */
  enrolledMs?: number;
  /** From the `issued` answer to the PUBACK of the hello on the mutual-TLS listener. */
  connectedMs?: number;
  /** Serial of the issued certificate, lower-case hex as the CA records it. */
  serial?: string;
}

export interface SimulationResult {
  devices: DeviceResult[];
  counts: Record<DeviceStatus, number>;
  durationMs: number;
  /** Devices that completed the whole flow per second of wall time. */
  enrollmentsPerSecond: number;
  /** With `configuration`: the devices that run, by id (each must be stopped). */
  configured?: Map<string, ConfiguredDevice>;
}

export const SIMULATION_DEFAULTS = {
  count: 1,
  concurrency: 10,
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

/** The id the agent accepts for a device (and as MQTT client id). */
/** The agent's own rule for device ids. */
export const DEVICE_ID = DEVICE_ID_PATTERN;

export function deviceId(prefix: string, index: number): string {
  return `${prefix}${String(index).padStart(5, '0')}`;
}

function urlProblem(text: string | undefined, what: string, schemes: string[]): string | undefined {
  if (text === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `${what} is not a URL: ${JSON.stringify(text)}`;
  }
  if (!schemes.includes(url.protocol)) return `${what} must start with ${schemes.map((s) => `${s}//`).join(' or ')}, not ${JSON.stringify(text)}`;
  if (url.hostname === '') return `${what} has no host: ${JSON.stringify(text)}`;
  return undefined;
}

const integerProblem = (value: number | undefined, what: string, min: number, max: number): string | undefined =>
  value === undefined || (Number.isSafeInteger(value) && value >= min && value <= max)
    ? undefined
    : `${what} must be an integer from ${min} to ${max}, not ${value}`;

/** The defaults under the options; an option given as undefined takes its default too. */
function withDefaults(options: SimulationOptions) {
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
  const c = options.configuration;
  if (c !== undefined) {
    if (o.skipMtls) problems.push('taking configuration needs the mutual-TLS connection: leave out --skip-mtls');
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

/** A broken answer to this device's own request: the agent broke the contract, so the device fails. */
function checkAnswer(a: Record<string, unknown>): Answer {
  if (a.status !== 'issued' && a.status !== 'pending' && a.status !== 'rejected') throw new Error(`answer with status ${JSON.stringify(a.status)}`);
  if (a.status === 'issued' && typeof a.certificate !== 'string') throw new Error('issued answer without a certificate');
  if (a.caChain !== undefined && !(Array.isArray(a.caChain) && a.caChain.every((c) => typeof c === 'string')))
    throw new Error('caChain is not a list of PEM strings');
  if (a.brokerUrl !== undefined && typeof a.brokerUrl !== 'string') throw new Error('brokerUrl is not a string');
  return a as unknown as Answer;
}

/**
 * One connection. MQTT.js emits 'error' on the client after connectAsync has
 * returned, and an EventEmitter without an 'error' listener throws, so the
 * listener lives as long as the client. `lost` turns an error or a close the
 * device did not ask for into a rejection that every step races against.
 */
function link(url: string, options: IClientOptions, owned: MqttClient[]): { client: MqttClient; ready: Promise<void>; lost: Promise<never> } {
  // connect() rather than connectAsync(): the client must be in `owned` from
  // the start, so a timeout during the handshake can still end it.
  const client = mqtt.connect(url, { ...options, reconnectPeriod: 0 });
  owned.push(client);
  let error: Error | undefined;
  // MQTT.js drops stream errors other than socket errors (a TLS alert from a
  // listener refusing the client certificate among them); keep the first so
  // the failure says why the connection closed.
  let streamError: Error | undefined;
  (client.stream as NodeJS.EventEmitter).on('error', (err: Error) => (streamError ??= err));
  // Without it Nagle holds each small packet that follows another until the
  // broker's delayed ACK (up to 40 ms on Linux), and a benchmark measures that.
  (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
  const ready = new Promise<void>((resolve) => client.once('connect', () => resolve()));
  const lost = new Promise<never>((_, reject) => {
    client.on('error', (err) => {
      error ??= err;
      reject(err);
    });
    client.once('close', () => {
      if (client.disconnecting) return;
      const why = client.connected ? 'the broker closed the connection' : 'the connection closed before CONNACK';
      reject(error ?? new Error(streamError ? `${why} (${streamError.message})` : why));
    });
  });
  lost.catch(() => {});
  return { client, ready, lost };
}

/** OpenSSL messages carry a source file and line; their `reason` ("tlsv1 alert unknown ca") is what a reader needs. */
function describe(err: unknown): string {
  const e = err as { message?: unknown; reason?: unknown };
  if (typeof e.reason === 'string' && e.reason !== '') return e.reason;
  return (typeof e.message === 'string' ? e.message.trim() : '') || String(err);
}

/** Drops the connection; bounded so that one client stuck in its teardown cannot hold up the whole run. */
async function close(client: MqttClient): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([client.endAsync(true).catch(() => {}), new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000)))]);
  clearTimeout(timer);
}

type Context = Required<Omit<SimulationOptions, 'caFile' | 'mtlsUrl' | 'token' | 'outDir' | 'signal' | 'configuration'>> &
  Pick<SimulationOptions, 'mtlsUrl' | 'token' | 'outDir' | 'configuration'> & { ca?: string; signal: AbortSignal; configured: Map<string, ConfiguredDevice> };

async function runDevice(id: string, index: number, ctx: Context): Promise<DeviceResult> {
  if (ctx.signal.aborted) return { id, status: 'failed', reason: 'aborted before it started' };
  const started = performance.now();
  // Not AbortSignal.any: signals combined with a long-lived one (ctx.signal)
  // stay reachable from it, a leak per device (nodejs/node#55351).
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort('timeout'), ctx.timeoutMs);
  const interrupt = () => stop.abort('interrupted');
  ctx.signal.addEventListener('abort', interrupt, { once: true });
  const aborted = new Promise<never>((_, reject) => stop.signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }));
  aborted.catch(() => {});
  const owned: MqttClient[] = [];
  const base = { clientId: id, protocolVersion: ctx.protocolVersion, connectTimeout: ctx.timeoutMs, ...(ctx.ca ? { ca: ctx.ca } : {}) };
  const ms = (from: number) => Math.round((performance.now() - from) * 10) / 10;
  let phase = 'connecting to the provisioning listener';
  let pending = false;
  let enrolled: Partial<DeviceResult> = {};
  try {
    const key = SoftwareKey.generate('ec-p256');
    const csr = buildCsr(key, encodeName({ commonName: id }));
    const prov = link(ctx.provisioningUrl, base, owned);
    const step = <T>(p: Promise<T>) => Promise.race([p, prov.lost, aborted]);
    await step(prov.ready);

    const responseTopic = `${ctx.topicPrefix}/${id}/response`;
    const requestId = randomUUID();
    const correlationData = Buffer.from(requestId);
    // Listening before subscribing: an answer can arrive before SUBACK is read.
    let answered = false;
    const answer = new Promise<Answer>((resolve, reject) => {
      prov.client.on('message', (topic: string, payload: Buffer, packet: IPublishPacket) => {
        if (topic !== responseTopic || answered) return;
        let body: Record<string, unknown>;
        try {
          body = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
          if (typeof body !== 'object' || body === null || (typeof body.requestId !== 'string' && body.requestId !== null)) throw new Error('no requestId');
        } catch (err) {
          answered = true;
          return reject(new Error(`malformed answer (${(err as Error).message})`));
        }
        // requestId null: the agent refused a request it could not read. This
        // device has one request out, so the refusal is of that one.
        if (body.requestId !== requestId && !(body.requestId === null && body.status === 'rejected')) return;
        try {
          const cd = packet.properties?.correlationData;
          if (ctx.protocolVersion === 5 && !(cd && correlationData.equals(cd))) throw new Error('answer without the correlation data of the request (MQTT 5)');
          const a = checkAnswer(body);
          if (a.status === 'pending') {
            pending = true;
            phase = 'waiting for approval';
            if (ctx.waitForApproval) return;
          }
          answered = true;
          resolve(a);
        } catch (err) {
          answered = true;
          reject(err);
        }
      });
    });
    answer.catch(() => {});

    phase = 'subscribing to the response topic';
    const [grant] = await step(prov.client.subscribeAsync(responseTopic, { qos: 1 }));
    if (!grant || grant.qos === 128) throw new Error(`the broker refused the subscription to ${responseTopic}`);
    phase = 'publishing the request';
    const request = {
      requestId,
      csr,
      nameplate: { manufacturer: ctx.manufacturer, model: ctx.model, serialNumber: id, hardwareRevision: 'A', firmwareVersion: '1.0.0' },
      ...(ctx.token !== undefined ? { enrollmentToken: ctx.token } : {}),
    };
    await step(
      prov.client.publishAsync(`${ctx.topicPrefix}/${id}/request`, JSON.stringify(request), {
        qos: 1,
        ...(ctx.protocolVersion === 5 ? { properties: { responseTopic, correlationData } } : {}),
      }),
    );
    if (!pending) phase = 'waiting for the answer';
    const a = await step(answer);
    if (a.status !== 'issued') return { id, status: a.status, ...(a.reason ? { reason: a.reason } : {}) };

    const issuedAt = performance.now();
    enrolled = { enrolledMs: ms(started) };
    phase = 'checking the issued certificate';
    const cert = new X509Certificate(a.certificate!);
    if (!cert.checkPrivateKey(key.exportable())) throw new Error('the issued certificate is not for the device key');
    enrolled.serial = normaliseSerial(cert.serialNumber);
    const chain = a.caChain ?? [];
    if (ctx.outDir) {
      phase = 'writing the key and certificate';
      const dir = join(ctx.outDir, id);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeKeyFile(join(dir, 'key.pem'), key.exportable(), undefined);
      writeFileAtomic(join(dir, 'cert.pem'), a.certificate!, 0o644);
      if (chain.length > 0) writeFileAtomic(join(dir, 'chain.pem'), chain.join(''), 0o644);
    }
    phase = 'leaving the provisioning listener';
    await step(prov.client.endAsync());
    if (ctx.skipMtls) return { id, status: 'issued', ...enrolled };

    phase = 'connecting to the mutual-TLS listener';
    const url = ctx.mtlsUrl ?? a.brokerUrl;
    if (url === undefined) throw new Error('the answer has no brokerUrl and no mutual-TLS URL was given');
    const bad = urlProblem(url, 'the brokerUrl of the answer', ['mqtts:']);
    if (bad) throw new Error(bad);
    const pem = key.exportable().export({ format: 'pem', type: 'pkcs8' }) as string;
    const device = link(url, { ...base, key: pem, cert: [a.certificate!, ...chain].join('\n') }, owned);
    const step2 = <T>(p: Promise<T>) => Promise.race([p, device.lost, aborted]);
    await step2(device.ready);
    phase = 'publishing hello';
    await step2(device.client.publishAsync(`devices/${id}/hello`, JSON.stringify({ deviceId: id, serial: enrolled.serial }), { qos: 1 }));
    const connectedMs = ms(issuedAt);
    phase = 'disconnecting';
    await step2(device.client.endAsync());
    if (ctx.configuration) {
      phase = 'subscribing to the desired configuration';
      const configured = new ConfiguredDevice(
        id,
        { url, key: pem, cert: [a.certificate!, ...chain].join('\n'), protocolVersion: ctx.protocolVersion, ...(ctx.ca ? { ca: ctx.ca } : {}) },
        { ...ctx.configuration, refusing: refuses(ctx.configuration.refuse, id, index) },
      );
      ctx.configured.set(id, configured);
      try {
        await Promise.race([configured.ready, aborted]);
      } catch (err) {
        ctx.configured.delete(id);
        await configured.stop();
        throw err;
      }
    }
    return { id, status: 'issued', ...enrolled, connectedMs };
  } catch (err) {
    if (stop.signal.reason === 'timeout') {
      const status = pending && !enrolled.enrolledMs ? 'pending' : 'failed';
      return { id, status, reason: `timed out after ${ctx.timeoutMs} ms ${phase}`, ...enrolled };
    }
    if (stop.signal.aborted) return { id, status: 'failed', reason: `aborted ${phase}`, ...enrolled };
    return { id, status: 'failed', reason: `${phase}: ${describe(err)}`, ...enrolled };
  } finally {
    clearTimeout(timer);
    ctx.signal.removeEventListener('abort', interrupt);
    await Promise.all(owned.map(close));
  }
}

/**
 * Runs `count` devices through enrollment, at most `concurrency` at a time.
 * Throws UsageError for unusable options; a device's failure is only ever
 * recorded in its result.
 */
export async function simulateDevices(options: SimulationOptions): Promise<SimulationResult> {
  const problems = validateOptions(options);
  if (problems.length > 0) throw new UsageError(problems.join('; '), { details: { problems } });
  const { caFile, signal, ...rest } = withDefaults(options);
  const ca = caFile === undefined ? undefined : readFileSync(caFile, 'utf8');
  if (ca !== undefined && !ca.includes('-----BEGIN CERTIFICATE-----')) throw new UsageError(`the CA bundle ${caFile} holds no PEM certificate`);
  // One listener on the caller's signal; each running device listens on ours,
  // which may therefore have as many listeners as the concurrency.
  const all = new AbortController();
  setMaxListeners(rest.concurrency + 1, all.signal);
  const abortAll = () => all.abort();
  if (signal?.aborted) all.abort();
  signal?.addEventListener('abort', abortAll, { once: true });
  const ctx: Context = { ...rest, ...(ca === undefined ? {} : { ca }), signal: all.signal, configured: new Map() };
  const devices: DeviceResult[] = new Array(ctx.count);
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    for (let i = next++; i < ctx.count; i = next++) devices[i] = await runDevice(deviceId(ctx.idPrefix, ctx.startIndex + i), i, ctx);
  };
  await Promise.all(Array.from({ length: Math.min(ctx.concurrency, ctx.count) }, worker));
  signal?.removeEventListener('abort', abortAll);
  const durationMs = performance.now() - started;
  const counts: Record<DeviceStatus, number> = { issued: 0, pending: 0, rejected: 0, failed: 0 };
  for (const d of devices) counts[d.status]++;
  return {
    devices,
    counts,
    durationMs: Math.round(durationMs),
    enrollmentsPerSecond: durationMs > 0 ? counts.issued / (durationMs / 1000) : 0,
    ...(ctx.configuration ? { configured: ctx.configured } : {}),
  };
}
