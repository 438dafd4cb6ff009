import mqtt, { type MqttClient } from 'mqtt';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../../agent/metrics.js';
import { EmbeddedBroker } from '../../../agent/transport/embeddedBroker.js';
import { issueCreds, type Creds } from '../../helpers/brokerCreds.js';
import { caFixture } from '../../helpers/caFixture.js';
import { tempDir } from '../../helpers/daemon.js';
import { pollUntil } from '../../helpers/waiters.js';

type Ca = ReturnType<typeof caFixture>;
/** Devices that reconnect at the same instant, as after a power cut. */
const DEVICES = 60;

const issue = issueCreds;

describe('the embedded broker when many devices reconnect at once (real TLS, MQTT.js)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: Ca;
  let trust: string;
  let broker: EmbeddedBroker;
  const metrics = new Metrics();
  const creds: Record<string, Creds> = {};
  const ids = Array.from({ length: DEVICES }, (_, i) => `storm-${i}`);
  /** What the broker told presence, in order. */
  const presence: [string, boolean][] = [];
  const clients: MqttClient[] = [];

  const connect = (id: string, clientId = id) =>
    new Promise<MqttClient>((resolve, reject) => {
      const client = mqtt.connect({
        host: '127.0.0.1',
        port: broker.addresses().mtls,
        protocol: 'mqtts',
        protocolVersion: 4,
        clientId,
        ca: trust,
        ...creds[id]!,
        reconnectPeriod: 0,
        connectTimeout: 30_000,
      });
      clients.push(client);
      client.once('connect', () => resolve(client));
      client.on('error', reject);
      client.once('close', () => reject(new Error(`${clientId}: closed before CONNACK`)));
    });
  const gauge = async () =>
    (await metrics.registry.getSingleMetric('edge_agent_broker_connected_clients')!.get()).values.find((v) => v.labels.listener === 'mtls')?.value ?? 0;
  const untilGauge = (n: number) =>
    pollUntil(async () => ((await gauge()) === n ? true : undefined), { timeoutMs: 30_000, message: () => `the mtls gauge never reached ${n}` });
  const told = (id: string, online: boolean) => presence.filter(([i, o]) => i === id && o === online).length;

  beforeAll(async () => {
    tmp = tempDir();
    ca = caFixture(tmp.dir);
    trust = ca.authority.trustBundle().join('');
    const server = await issue(ca, 'broker-server', 'gw');
    for (const id of ids) creds[id] = await issue(ca, 'mqtt-device', id);
    broker = new EmbeddedBroker({
      log: pino({ level: 'silent' }),
      metrics,
      options: { host: '127.0.0.1', provisioningPort: 0, provisioningTls: true, mtlsPort: 0, topicPrefix: 'edge/prov/v1', maxPayloadBytes: 4096 },
      tls: () => ({ key: server.key, cert: server.cert, ca: trust }),
      access: { allowed: () => true },
      presence: (id, online) => void presence.push([id, online]),
    });
    await broker.start(new AbortController().signal);
  }, 120_000);
  afterAll(async () => {
    for (const c of clients) c.end(true);
    await broker?.stop();
    ca?.close();
    tmp?.cleanup();
  });

  it('lets every device in and tells presence once per identity: online with its first connection, offline with its last', async () => {
    const connected = await Promise.all(ids.map((id) => connect(id)));
    await Promise.all(connected.map((c, i) => c.publishAsync(`devices/${ids[i]}/hello`, 'back after a power cut', { qos: 1 })));
    await untilGauge(DEVICES);
    expect(presence.filter(([, online]) => online).map(([id]) => id)).toEqual(expect.arrayContaining(ids));
    expect(presence).toHaveLength(DEVICES);

    // A second connection of one identity (another client id) changes the count, not the presence.
    const second = await connect('storm-0', 'storm-0-second');
    await untilGauge(DEVICES + 1);
    connected[0]!.end(true);
    await untilGauge(DEVICES);
    expect(told('storm-0', false)).toBe(0);
    second.end(true);
    await pollUntil(() => (told('storm-0', false) === 1 ? true : undefined), { timeoutMs: 30_000, message: () => 'storm-0 never went offline' });

    for (const c of connected.slice(1)) c.end(true);
    await untilGauge(0);
    for (const id of ids) expect([id, told(id, true), told(id, false)]).toEqual([id, 1, 1]);
  });
});
