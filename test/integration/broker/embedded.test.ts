import { once } from 'node:events';
import { connect as tlsConnect } from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../../agent/metrics.js';
import { EmbeddedBroker } from '../../../agent/transport/embeddedBroker.js';
import type { InboundMessage } from '../../../agent/transport/types.js';
import { issueCreds, type Creds } from '../../helpers/brokerCreds.js';
import { caFixture } from '../../helpers/caFixture.js';
import { tempDir } from '../../helpers/daemon.js';
import { freePort } from '../../helpers/mosquitto.js';
import { Waiters } from '../../helpers/waiters.js';

type Ca = ReturnType<typeof caFixture>;
const PREFIX = 'edge/prov/v1';
const MAX_PAYLOAD = 4096;
/** What MQTT.js rejects subscribeAsync with when the SUBACK grants 128. */
const REFUSED = { packet: { granted: [128] } };
const closing = (client: MqttClient) => new Promise<void>((resolve) => client.once('close', () => resolve()));

const issue = issueCreds;

describe('the embedded aedes broker with real TLS and MQTT.js clients', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: Ca;
  let otherCa: Ca;
  let trust: string;
  let server: Creds;
  let metrics: Metrics;
  let broker: EmbeddedBroker;
  const devices: Record<string, Creds> = {};
  const denied = new Set<string>();
  const asked: [string, string][] = [];
  const inbox: InboundMessage[] = [];
  const arrivals = new Waiters();
  const clients: MqttClient[] = [];
  /** What the broker logged at warn and above (pino writes to the stream synchronously). */
  const logged: Record<string, unknown>[] = [];

  const makeBroker = (options: Partial<ConstructorParameters<typeof EmbeddedBroker>[0]['options']> = {}, registry = new Metrics()) =>
    new EmbeddedBroker({
      log: pino({ level: 'warn' }, { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) }),
      metrics: registry,
      options: { host: '127.0.0.1', provisioningPort: 0, provisioningTls: true, mtlsPort: 0, topicPrefix: PREFIX, maxPayloadBytes: MAX_PAYLOAD, ...options },
      tls: () => ({ key: server.key, cert: server.cert, ca: trust }),
      access: {
        allowed: (identity, serial) => {
          asked.push([identity, serial]);
          return !denied.has(identity);
        },
      },
    });

  /** An MQTT 3.1.1 client, connected, or the error (CONNACK refusal, TLS alert, close) that stopped it. */
  function connect(port: number, clientId: string, o: { creds?: Creds; plain?: boolean } = {}): Promise<MqttClient> {
    return new Promise((resolve, reject) => {
      const client = mqtt.connect({
        host: '127.0.0.1',
        port,
        protocol: o.plain ? 'mqtt' : 'mqtts',
        protocolVersion: 4,
        clientId,
        ca: trust,
        ...(o.creds ? { key: o.creds.key, cert: o.creds.cert } : {}),
        reconnectPeriod: 0,
        connectTimeout: 5000,
      });
      clients.push(client);
      client.once('connect', () => resolve(client));
      client.on('error', reject);
      client.once('close', () => reject(new Error('connection closed before CONNACK')));
    });
  }
  const device = (id: string, clientId = id) => connect(broker.addresses().mtls, clientId, { creds: devices[id]! });
  const provisioning = (clientId: string) => connect(broker.addresses().provisioning, clientId);
  const received = (topic: string, payload: string) =>
    arrivals.until(() => inbox.find((m) => m.topic === topic && m.payload.toString() === payload), {
      timeoutMs: 5000,
      timeoutMessage: () => `no ${topic} ${payload}; got ${JSON.stringify(inbox.map((m) => [m.topic, m.payload.toString()]))}`,
    });
  /** The sum of a metric's values over the series that have `labels`. */
  const counted = async (name: string, labels: Record<string, string>) =>
    (await metrics.registry.getSingleMetric(name)!.get()).values
      .filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
      .reduce((sum, v) => sum + v.value, 0);

  beforeAll(async () => {
    tmp = tempDir();
    ca = caFixture(`${tmp.dir}/a`);
    otherCa = caFixture(`${tmp.dir}/b`);
    trust = ca.authority.trustBundle().join('');
    server = await issue(ca, 'broker-server', 'gw');
    for (const id of ['sensor-1', 'sensor-2', 'sensor-3']) devices[id] = await issue(ca, 'mqtt-device', id);
    devices.rogue = await issue(otherCa, 'mqtt-device', 'sensor-1');
    metrics = new Metrics();
    broker = makeBroker({ provisioningPort: await freePort() }, metrics);
    await broker.start(new AbortController().signal);
    await broker.subscribe(['devices/#', 'spBv1.0/#', `${PREFIX}/+/request`], (m) => {
      inbox.push(m);
      arrivals.wake();
    });
  }, 60_000);
  afterEach(() => {
    for (const c of clients.splice(0)) c.end(true);
  });
  afterAll(async () => {
    await broker?.stop();
    ca?.close();
    otherCa?.close();
    tmp?.cleanup();
  });

  it('lets an allowed device in over mutual TLS and hands what it publishes to an in-process subscriber', async () => {
    const client = await device('sensor-1');
    await client.publishAsync('devices/sensor-1/temperature', '21.5', { qos: 1 });
    await client.publishAsync('spBv1.0/plant/DDATA/sensor-1/pump', 'sparkplug', { qos: 1 });
    expect((await received('devices/sensor-1/temperature', '21.5')).payload).toEqual(Buffer.from('21.5'));
    await received('spBv1.0/plant/DDATA/sensor-1/pump', 'sparkplug');
    // The serial reaches DeviceAccess in the CA's canonical form.
    expect(asked).toContainEqual(['sensor-1', devices['sensor-1']!.serial]);
    expect(await counted('edge_agent_broker_connected_clients', { listener: 'mtls' })).toBe(1);
  });

  it.each([
    ['no client certificate', undefined],
    ['a certificate from another CA', 'rogue'],
  ])('refuses on the mutual-TLS listener a client with %s', async (_name, id) => {
    const port = broker.addresses().mtls;
    const before = await counted('edge_agent_broker_refused_connections_total', { listener: 'mtls', reason: 'tls' });
    await expect(connect(port, 'sensor-1', id ? { creds: devices[id]! } : {})).rejects.toThrow();
    expect(await counted('edge_agent_broker_refused_connections_total', { listener: 'mtls', reason: 'tls' })).toBe(before + 1);
  });

  it('refuses a certificate that DeviceAccess no longer allows (CONNACK 5), and lets it in again once allowed', async () => {
    denied.add('sensor-3');
    await expect(device('sensor-3')).rejects.toMatchObject({ code: 5 });
    expect(await counted('edge_agent_broker_refused_connections_total', { reason: 'not_authorized' })).toBe(1);
    denied.delete('sensor-3');
    await (await device('sensor-3')).publishAsync('devices/sensor-3/state', 'back', { qos: 1 });
    await received('devices/sensor-3/state', 'back');
  });

  it("keeps a device out of another device's topics: the forged publish cuts it off and never arrives", async () => {
    const client = await device('sensor-2');
    await expect(client.subscribeAsync('devices/sensor-1/#', { qos: 1 })).rejects.toMatchObject(REFUSED);
    await expect(client.subscribeAsync('devices/+/temperature', { qos: 1 })).rejects.toMatchObject(REFUSED);
    expect(await client.subscribeAsync('devices/sensor-2/#', { qos: 1 })).toEqual([{ topic: 'devices/sensor-2/#', qos: 1 }]);
    await client.publishAsync('devices/sensor-2/before', 'own', { qos: 1 });
    await received('devices/sensor-2/before', 'own');
    const gone = closing(client);
    client.publish('devices/sensor-1/temperature', 'forged', { qos: 0 });
    await gone;
    expect(inbox.filter((m) => m.payload.toString() === 'forged')).toEqual([]);
    expect(await counted('edge_agent_broker_refused_publishes_total', { listener: 'mtls', reason: 'acl' })).toBe(1);
    expect(await counted('edge_agent_broker_refused_subscribes_total', { listener: 'mtls', reason: 'acl' })).toBe(2);
  });

  it('stops delivering to a connected device while DeviceAccess refuses it', async () => {
    const client = await device('sensor-3');
    const got: string[] = [];
    client.on('message', (_topic, payload) => got.push(payload.toString()));
    await client.subscribeAsync('devices/sensor-3/cmd', { qos: 1 });
    const send = (text: string) => broker.publish('devices/sensor-3/cmd', Buffer.from(text), { qos: 1 });
    const arrived = (text: string) => new Promise<void>((resolve) => client.on('message', (_t, p) => p.toString() === text && resolve()));
    await Promise.all([arrived('one'), send('one')]);
    denied.add('sensor-3');
    await send('withheld');
    denied.delete('sensor-3');
    await Promise.all([arrived('three'), send('three')]);
    expect(got).toEqual(['one', 'three']);
  });

  it('disconnectIdentity cuts off every connection of one identity while another device stays connected', async () => {
    const first = await device('sensor-1', 'sensor-1-a');
    const second = await device('sensor-1', 'sensor-1-b');
    const other = await device('sensor-2');
    const cut = Promise.all([closing(first), closing(second)]);
    expect(broker.disconnectIdentity('sensor-1')).toBe(2);
    await cut;
    expect(broker.disconnectIdentity('sensor-1')).toBe(0);
    await other.publishAsync('devices/sensor-2/after-cut', 'still here', { qos: 1 });
    await received('devices/sensor-2/after-cut', 'still here');
  });

  it('lets a provisioning client publish only its own request and read only its own response', async () => {
    const client = await provisioning('sensor-9');
    const responses: string[] = [];
    client.on('message', (topic, payload) => responses.push(`${topic} ${payload.toString()}`));
    await expect(client.subscribeAsync(`${PREFIX}/sensor-8/response`, { qos: 1 })).rejects.toMatchObject(REFUSED);
    await expect(client.subscribeAsync(`${PREFIX}/+/response`, { qos: 1 })).rejects.toMatchObject(REFUSED);
    await client.subscribeAsync(`${PREFIX}/sensor-9/response`, { qos: 1 });
    await client.publishAsync(`${PREFIX}/sensor-9/request`, 'mine', { qos: 1 });
    await received(`${PREFIX}/sensor-9/request`, 'mine');

    const answered = new Promise((resolve) => client.once('message', resolve));
    await broker.publish(`${PREFIX}/sensor-9/response`, Buffer.from('issued'), { qos: 1 });
    await answered;
    expect(responses).toEqual([`${PREFIX}/sensor-9/response issued`]);

    const gone = closing(client);
    client.publish(`${PREFIX}/sensor-8/request`, 'forged', { qos: 0 });
    await gone;
    expect(inbox.filter((m) => m.topic.startsWith(PREFIX)).map((m) => m.payload.toString())).toEqual(['mine']);
    // The integrator's usual mistake (requests under another client id) is named in the log.
    expect(logged).toContainEqual(
      expect.objectContaining({
        msg: 'broker refused a publish',
        clientId: 'sensor-9',
        topic: `${PREFIX}/sensor-8/request`,
        hint: expect.stringMatching(/the client id must be the device id/),
      }),
    );
  });

  it.each(['a/b', 'sensor#1', 'x'.repeat(65), '', '.', '..'])('refuses the provisioning client id %j (CONNACK 2)', async (clientId) => {
    await expect(provisioning(clientId)).rejects.toMatchObject({ code: 2 });
  });

  it("keeps a provisioning client from taking over a connected device's client id", async () => {
    const owner = await device('sensor-2', 'shared-id');
    await expect(provisioning('shared-id')).rejects.toMatchObject({ code: 2 });
    await owner.publishAsync('devices/sensor-2/taken', 'kept', { qos: 1 });
    await received('devices/sensor-2/taken', 'kept');
  });

  it('closes a connection whose packet is too large, without waiting for its body, and keeps serving others', async () => {
    // A publish within the packet limit but over maxPayloadBytes: refused by authorizePublish.
    const big = await device('sensor-1');
    const refused = closing(big);
    big.publish('devices/sensor-1/blob', Buffer.alloc(MAX_PAYLOAD + 1), { qos: 0 });
    await refused;
    expect(await counted('edge_agent_broker_refused_publishes_total', { reason: 'too_large' })).toBe(1);

    // A fixed header announcing 256 MiB on the provisioning listener: closed after 5 bytes.
    const raw = tlsConnect({ host: '127.0.0.1', port: broker.addresses().provisioning, ca: trust }).on('error', () => undefined);
    await once(raw, 'secureConnect');
    const rawClosed = once(raw, 'close');
    raw.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]));
    await rawClosed;

    // A whole oversize packet over mutual TLS.
    const huge = await device('sensor-1');
    const cut = closing(huge);
    huge.publish('devices/sensor-1/blob', Buffer.alloc(MAX_PAYLOAD + 4096), { qos: 0 });
    await cut;
    expect(await counted('edge_agent_broker_refused_connections_total', { reason: 'too_large' })).toBe(2);

    const other = await device('sensor-2');
    await other.publishAsync('devices/sensor-2/after-big', 'fine', { qos: 1 });
    await received('devices/sensor-2/after-big', 'fine');
  });

  it('serves plain MQTT on the provisioning listener when TLS is off, and fails start() naming a port in use', async () => {
    const plain = makeBroker({ provisioningTls: false });
    const clash = makeBroker({ mtlsPort: broker.addresses().mtls });
    try {
      await plain.start(new AbortController().signal);
      let delivered!: (text: string) => void;
      const seen = new Promise<string>((resolve) => (delivered = resolve));
      await plain.subscribe([`${PREFIX}/+/request`], (m) => delivered(m.payload.toString()));
      const client = await connect(plain.addresses().provisioning, 'sensor-7', { plain: true });
      await client.publishAsync(`${PREFIX}/sensor-7/request`, 'plain', { qos: 1 });
      expect(await seen).toBe('plain');
      await expect(clash.start(new AbortController().signal)).rejects.toMatchObject({
        code: 'SERVICE_START_FAILED',
        message: expect.stringContaining(`port ${broker.addresses().mtls}: listen EADDRINUSE`),
      });
      expect(clash.isConnected()).toBe(false);
    } finally {
      await Promise.all([plain.stop(), clash.stop()]);
    }
  });

  it('stop() closes every connection, is idempotent, and leaves nothing listening', async () => {
    const ports = broker.addresses();
    const client = await device('sensor-2');
    const gone = closing(client);
    await Promise.all([broker.stop(), broker.stop()]);
    await gone;
    await broker.stop();
    expect(broker.isConnected()).toBe(false);
    await expect(connect(ports.mtls, 'sensor-2', { creds: devices['sensor-2']! })).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
