/**
 * One worker thread of the reconnect-storm load generator (stormLoad.ts
 * starts them). It holds a share of the provisioned devices and, at the
 * moment the main thread names, connects them all at once:
 *
 * - mode `mqtt`: mutual TLS to the broker, CONNECT, a QoS 1 hello on
 *   `devices/<id>/hello`; a device is done at the hello's PUBACK.
 * - mode `tls`: the TLS handshake alone with the same keys and certificates
 *   (the bound the MQTT figures are compared with); done at secureConnect.
 *
 * A failed attempt (refused, reset, timed out) is retried after a jittered,
 * doubling delay, as a device would after a power cut. Done devices stay
 * connected until the main thread says `close`.
 */
import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import { parentPort, workerData } from 'node:worker_threads';
import mqtt, { type MqttClient } from 'mqtt';

export interface StormWorkerData {
  mode: 'mqtt' | 'tls';
  host: string;
  port: number;
  /** PEM trust bundle the server certificate is verified against. */
  ca: string;
  devices: { id: string; key: string; cert: string }[];
  /** An attempt that has not finished after this long is abandoned and retried. */
  attemptTimeoutMs: number;
  /** A device not done this long after the start is given up. */
  deadlineMs: number;
}

/** What the worker posts back once every one of its devices is done or given up. */
export interface StormWorkerResult {
  /** Per device: epoch milliseconds when done (undefined: given up), attempts made, the last error. */
  devices: { id: string; doneAt?: number; attempts: number; error?: string }[];
  /** Failed attempts by error message (retried or not). */
  errors: Record<string, number>;
}

export type StormCommand = { type: 'start'; at: number } | { type: 'close' };

const now = () => performance.timeOrigin + performance.now();
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 8_000;

function run(data: StormWorkerData): void {
  const port = parentPort!;
  // Each device's key, certificate and trust parsed before the timed part, as firmware holds them loaded.
  const contexts: SecureContext[] = data.devices.map((d) => createSecureContext({ key: d.key, cert: d.cert, ca: data.ca, minVersion: 'TLSv1.2' }));
  const results: StormWorkerResult['devices'] = data.devices.map((d) => ({ id: d.id, attempts: 0 }));
  const live: (MqttClient | TLSSocket | undefined)[] = data.devices.map(() => undefined);
  let closing = false;
  let dropped = 0;
  const errors: Record<string, number> = {};
  let pending = data.devices.length;
  let startedAt = 0;

  const finish = (i: number, error?: string): void => {
    const r = results[i]!;
    if (error === undefined) r.doneAt = now();
    else r.error = error;
    if (--pending === 0) port.postMessage({ type: 'done', result: { devices: results, errors } satisfies StormWorkerResult });
  };

  const attempt = (i: number): void => {
    const r = results[i]!;
    r.attempts++;
    let settled = false;
    const fail = (err: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      end(i);
      r.error = err instanceof Error ? err.message : String(err);
      // Addresses and ports vary; the kind of failure is what counts.
      const kind = r.error.replace(/\d+\.\d+\.\d+\.\d+:\d+/g, 'ADDR');
      errors[kind] = (errors[kind] ?? 0) + 1;
      if (closing || now() - startedAt > data.deadlineMs) return finish(i, r.error);
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (r.attempts - 1)) * (0.5 + Math.random() / 2);
      setTimeout(() => attempt(i), delay);
    };
    const succeed = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      delete r.error;
      finish(i);
    };
    const timer = setTimeout(() => fail(new Error(`attempt timed out after ${data.attemptTimeoutMs} ms`)), data.attemptTimeoutMs);
    const d = data.devices[i]!;
    if (data.mode === 'tls') {
      const socket = tlsConnect({ host: data.host, port: data.port, secureContext: contexts[i]! });
      live[i] = socket;
      socket.once('secureConnect', succeed);
      socket.on('error', fail);
      socket.once('close', () => (settled ? lost(i, socket) : fail(new Error('closed during the handshake'))));
      return;
    }
    const client = mqtt.connect({
      host: data.host,
      port: data.port,
      protocol: 'mqtts',
      protocolVersion: 4,
      clientId: d.id,
      secureContext: contexts[i]!,
      reconnectPeriod: 0,
      connectTimeout: data.attemptTimeoutMs,
      keepalive: 120,
    } as mqtt.IClientOptions);
    live[i] = client;
    client.on('error', fail);
    client.once('close', () => (settled ? lost(i, client) : fail(new Error('closed before the hello was acknowledged'))));
    client.once('connect', () => {
      client.publishAsync(`devices/${d.id}/hello`, JSON.stringify({ deviceId: d.id, after: 'power cut' }), { qos: 1 }).then(succeed, fail);
    });
  };

  /** A done device's connection closed without being asked to: the server dropped it. */
  const lost = (i: number, c: MqttClient | TLSSocket): void => {
    if (closing || live[i] !== c || results[i]!.doneAt === undefined) return;
    live[i] = undefined;
    dropped++;
  };

  const end = (i: number): void => {
    const c = live[i];
    live[i] = undefined;
    if (!c) return;
    if (data.mode === 'tls') (c as TLSSocket).destroy();
    else (c as MqttClient).end(true);
  };

  port.on('message', (cmd: StormCommand) => {
    if (cmd.type === 'start') {
      setTimeout(
        () => {
          startedAt = now();
          for (let i = 0; i < data.devices.length; i++) attempt(i);
        },
        Math.max(0, cmd.at - now()),
      );
    } else {
      closing = true;
      for (let i = 0; i < live.length; i++) end(i);
      port.postMessage({ type: 'closed', dropped });
    }
  });
  port.postMessage({ type: 'ready' });
}

if (parentPort) run(workerData as StormWorkerData);
