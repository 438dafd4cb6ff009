/**
 * One simulated device's flow (mqttDevices.ts runs many): its key and CSR,
 * the request on the provisioning listener, the certificate, the hello over
 * mutual TLS and, when asked, reconnections to that listener that offer the
 * TLS session of the device's previous connection, as a real device's TLS
 * stack does.
 */
import { randomUUID, X509Certificate } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createSecureContext, type ConnectionOptions, type SecureContext, type TLSSocket } from 'node:tls';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import type { Answer } from '../../agent/onboarding/mqttEnrollment.js';
import { normaliseSerial } from '../../certs/authority.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { writeFileAtomic, writeKeyFile } from '../../certs/keys/fileKey.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import { ConfiguredDevice, refuses, type DeviceConfigOptions } from './configDevice.js';

export type DeviceStatus = 'issued' | 'pending' | 'rejected' | 'failed';

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
  /** With `reconnects`: each reconnection's time from the connect to the PUBACK of its hello. */
  reconnectedMs?: number[];
  /** With `reconnects`: how many of them resumed the device's earlier TLS session (TLSSocket.isSessionReused()). */
  resumed?: number;
}

/** A device's key and CSR, made before its flow starts (`pregenerate`). */
export interface PreparedDevice {
  key: SoftwareKey;
  csr: string;
}

/** A fresh P-256 key and a CSR whose subject is the device id, as a device makes them. */
export function prepareDevice(id: string): PreparedDevice {
  const key = SoftwareKey.generate('ec-p256');
  return { key, csr: buildCsr(key, encodeName({ commonName: id })) };
}

/** What runDevice needs: the simulation's options with their defaults, and what the simulation shares. */
export interface DeviceContext {
  provisioningUrl: string;
  mtlsUrl?: string;
  topicPrefix: string;
  token?: string;
  manufacturer: string;
  model: string;
  protocolVersion: 4 | 5;
  timeoutMs: number;
  waitForApproval: boolean;
  outDir?: string;
  skipMtls: boolean;
  reconnects: number;
  resumeTls: boolean;
  configuration?: DeviceConfigOptions;
  ca?: string;
  /**
   * The provisioning connections' TLS context (the CA bundle), made once:
   * a device builds its TLS context when it starts, not per connection, and
   * building one per connection from PEM made the simulator slower than the
   * agent it measures.
   */
  provisioningTls?: SecureContext;
  signal: AbortSignal;
  configured: Map<string, ConfiguredDevice>;
  /** Told each time the broker has taken a device's request (PUBACK). */
  onRequested?: () => void;
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

export function urlProblem(text: string | undefined, what: string, schemes: string[]): string | undefined {
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

/** MQTT.js hands its options to tls.connect whole, so these reach it too; its types do not list them. */
type LinkOptions = IClientOptions & Pick<ConnectionOptions, 'secureContext' | 'session'>;

interface Link {
  client: MqttClient;
  ready: Promise<void>;
  lost: Promise<never>;
  /** The TLS session the server last gave (TLS 1.3 sends it after the handshake), to offer on the next connection. */
  session: () => Buffer | undefined;
}

/**
 * One connection. MQTT.js emits 'error' on the client after connectAsync has
 * returned, and an EventEmitter without an 'error' listener throws, so the
 * listener lives as long as the client. `lost` turns an error or a close the
 * device did not ask for into a rejection that every step races against.
 */
function link(url: string, options: LinkOptions, owned: MqttClient[]): Link {
  // connect() rather than connectAsync(): the client must be in `owned` from
  // the start, so a timeout during the handshake can still end it.
  const client = mqtt.connect(url, { ...options, reconnectPeriod: 0 });
  owned.push(client);
  let error: Error | undefined;
  // MQTT.js drops stream errors other than socket errors (a TLS alert from a
  // listener refusing the client certificate among them); keep the first so
  // the failure says why the connection closed.
  let streamError: Error | undefined;
  let session: Buffer | undefined;
  const stream = client.stream as NodeJS.EventEmitter;
  stream.on('error', (err: Error) => (streamError ??= err));
  stream.on('session', (s: Buffer) => (session = s));
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
  return { client, ready, lost, session: () => session };
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

const ms = (from: number) => Math.round((performance.now() - from) * 10) / 10;

/** Device number `index` of the run, named `id`, from its key to its last hello. Never throws: a failure is its result. */
export async function runDevice(id: string, index: number, ctx: DeviceContext, prepared?: PreparedDevice): Promise<DeviceResult> {
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
  const base = { clientId: id, protocolVersion: ctx.protocolVersion, connectTimeout: ctx.timeoutMs };
  let phase = 'connecting to the provisioning listener';
  let pending = false;
  let enrolled: Partial<DeviceResult> = {};
  try {
    const { key, csr } = prepared ?? prepareDevice(id);
    const prov = link(ctx.provisioningUrl, { ...base, ...(ctx.provisioningTls ? { secureContext: ctx.provisioningTls } : {}) }, owned);
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
    ctx.onRequested?.();
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
    const certChain = [a.certificate!, ...chain].join('\n');
    // The device's own TLS identity, built once and used for every connection it makes to this listener.
    const identity = createSecureContext({ key: pem, cert: certChain, ...(ctx.ca ? { ca: ctx.ca } : {}) });
    // Connects, says hello, waits for its PUBACK and leaves; the session the listener gave, for the next connection.
    const hello = async (session: Buffer | undefined): Promise<{ resumed: boolean; session: Buffer | undefined }> => {
      const device = link(url, { ...base, secureContext: identity, ...(session ? { session } : {}) }, owned);
      const step2 = <T>(p: Promise<T>) => Promise.race([p, device.lost, aborted]);
      await step2(device.ready);
      const resumed = (device.client.stream as TLSSocket).isSessionReused();
      phase = 'publishing hello';
      await step2(device.client.publishAsync(`devices/${id}/hello`, JSON.stringify({ deviceId: id, serial: enrolled.serial }), { qos: 1 }));
      phase = 'disconnecting';
      await step2(device.client.endAsync());
      return { resumed, session: device.session() };
    };
    let { session } = await hello(undefined);
    const connectedMs = ms(issuedAt);
    const reconnectedMs: number[] = [];
    let resumed = 0;
    for (let r = 0; r < ctx.reconnects; r++) {
      phase = `reconnecting (${r + 1} of ${ctx.reconnects})`;
      const from = performance.now();
      const again = await hello(ctx.resumeTls ? session : undefined);
      reconnectedMs.push(ms(from));
      if (again.resumed) resumed++;
      session = again.session ?? session;
    }
    const reconnected = ctx.reconnects > 0 ? { reconnectedMs, resumed } : {};
    if (ctx.configuration) {
      phase = 'subscribing to the desired configuration';
      const configured = new ConfiguredDevice(
        id,
        {
          url,
          key: pem,
          cert: certChain,
          protocolVersion: ctx.protocolVersion,
          ...(ctx.ca ? { ca: ctx.ca } : {}),
          secureContext: identity,
          ...(ctx.resumeTls && session ? { session } : {}),
        },
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
    return { id, status: 'issued', ...enrolled, connectedMs, ...reconnected };
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
