import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../../agent/metrics.js';
import { EmbeddedBroker } from '../../../agent/transport/embeddedBroker.js';
import { ExternalBroker } from '../../../agent/transport/externalBroker.js';
import type { InboundMessage } from '../../../agent/transport/types.js';
import { canonicalJson, ConfiguredDevice } from '../../../scripts/simulate/configDevice.js';
import { issueCreds, type Creds as IssuedCreds } from '../../helpers/brokerCreds.js';
import { caFixture } from '../../helpers/caFixture.js';
import { runCli, tempDir } from '../../helpers/daemon.js';
import { freePort, Mosquitto } from '../../helpers/mosquitto.js';
import { opensslCsr } from '../../helpers/openssl.js';
import { pollUntil, Waiters } from '../../helpers/waiters.js';

/** What MQTT.js rejects subscribeAsync with when the SUBACK grants 128. */
const REFUSED = { packet: { granted: [128] } };
const silent = pino({ level: 'silent' });
/** A device's key and certificate chain (PEM), issued here or by the CLI. */
type Creds = Pick<IssuedCreds, 'key' | 'cert'>;

/** A device's MQTT.js client and every message it received, in order. */
class Device {
  readonly got: string[] = [];
  private readonly arrivals = new Waiters();
  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload) => {
      this.got.push(`${topic} ${payload.toString()}`);
      this.arrivals.wake();
    });
  }

  static connect(url: string, clientId: string, creds: Creds, ca: string, protocolVersion: 4 | 5): Promise<Device> {
    return new Promise((resolve, reject) => {
      const client = mqtt.connect(url, { clientId, protocolVersion, ...creds, ca, reconnectPeriod: 0, connectTimeout: 5_000 });
      client.once('connect', () => resolve(new Device(client)));
      client.on('error', reject);
      client.once('close', () => reject(new Error('closed before CONNACK')));
    });
  }

  received(line: string): Promise<string> {
    return this.arrivals.until(() => this.got.find((l) => l === line), {
      timeoutMs: 10_000,
      timeoutMessage: () => `no "${line}"; got ${JSON.stringify(this.got)}`,
    });
  }
}

const closing = (client: MqttClient) => new Promise<void>((resolve) => client.once('close', () => resolve()));

describe('configuration topics on the embedded broker: retained desired, ACLs', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: ReturnType<typeof caFixture>;
  let trust: string;
  let broker: EmbeddedBroker;
  const creds: Record<string, Creds> = {};
  const devices: Device[] = [];
  const reports: InboundMessage[] = [];
  const arrivals = new Waiters();

  const issue = (profile: 'broker-server' | 'mqtt-device', identity: string) => issueCreds(ca, profile, identity);

  const device = async (id: string, clientId = id) => {
    const d = await Device.connect(`mqtts://127.0.0.1:${broker.addresses().mtls}`, clientId, creds[id]!, trust, 4);
    devices.push(d);
    return d;
  };

  beforeAll(async () => {
    tmp = tempDir();
    ca = caFixture(tmp.dir);
    trust = ca.authority.trustBundle().join('');
    const server = await issue('broker-server', 'gw');
    for (const id of ['sensor-1', 'sensor-2']) creds[id] = await issue('mqtt-device', id);
    broker = new EmbeddedBroker({
      log: silent,
      metrics: new Metrics(),
      options: {
        host: '127.0.0.1',
        provisioningPort: 0,
        provisioningTls: true,
        mtlsPort: 0,
        topicPrefix: 'edge/prov/v1',
        maxPayloadBytes: 65536,
        configTopicRoot: 'config',
      },
      tls: () => ({ key: server.key, cert: server.cert, ca: trust }),
      access: { allowed: () => true },
    });
    await broker.start(new AbortController().signal);
    await broker.subscribe(['config/+/reported'], (m) => {
      reports.push(m);
      arrivals.wake();
    });
  }, 60_000);
  afterEach(() => {
    for (const d of devices.splice(0)) d.client.end(true);
  });
  afterAll(async () => {
    await broker?.stop();
    ca?.close();
    tmp?.cleanup();
  });

  /** `id` publishes `body` on its own reported topic; resolves once the agent's link has it. */
  async function ownReport(id: string, body: string): Promise<void> {
    const d = await device(id);
    await d.client.publishAsync(`config/${id}/reported`, body, { qos: 1 });
    await arrivals.until(() => reports.find((m) => m.payload.toString() === body), { timeoutMs: 5_000, timeoutMessage: () => `no report ${body}` });
  }

  it('hands a device its retained desired configuration when it subscribes, and takes its report', async () => {
    await broker.publish('config/sensor-1/desired', Buffer.from('{"v":1}'), { qos: 1, retain: true });
    const d = await device('sensor-1');
    await d.client.subscribeAsync('config/sensor-1/desired', { qos: 1 });
    await d.received('config/sensor-1/desired {"v":1}');
    await d.client.publishAsync('config/sensor-1/reported', 'applied', { qos: 1 });
    await arrivals.until(() => reports.find((m) => m.topic === 'config/sensor-1/reported'), { timeoutMs: 5_000, timeoutMessage: () => 'no report' });
  });

  it("refuses another device's subscription to a device's desired topic, wildcards included", async () => {
    const d = await device('sensor-2');
    await expect(d.client.subscribeAsync('config/sensor-1/desired', { qos: 1 })).rejects.toMatchObject(REFUSED);
    await expect(d.client.subscribeAsync('config/+/desired', { qos: 1 })).rejects.toMatchObject(REFUSED);
    await expect(d.client.subscribeAsync('config/#', { qos: 1 })).rejects.toMatchObject(REFUSED);
    expect(d.got).toEqual([]);
  });

  it("cuts off a device that writes its own desired topic, and the retained message stays the agent's", async () => {
    const d = await device('sensor-1');
    const gone = closing(d.client);
    d.client.publish('config/sensor-1/desired', '{"v":666}', { qos: 1, retain: true });
    await gone;
    expect((await broker.retained(['config/sensor-1/desired'])).map((m) => m.payload.toString())).toEqual(['{"v":1}']);
  });

  it('drops a report a device publishes for another device', async () => {
    const d = await device('sensor-2');
    const gone = closing(d.client);
    d.client.publish('config/sensor-1/reported', 'forged', { qos: 1 });
    await gone;
    // Something to wait for: a report published after it by the device itself arrives; the forged one would be before it.
    await ownReport('sensor-1', 'after-forged');
    expect(reports.map((m) => m.payload.toString())).not.toContain('forged');
  });

  it('cuts off a device that publishes its report retained, and keeps nothing of it', async () => {
    const d = await device('sensor-1');
    const gone = closing(d.client);
    d.client.publish('config/sensor-1/reported', 'retained-report', { qos: 1, retain: true });
    await gone;
    await ownReport('sensor-1', 'after-retained');
    expect(reports.map((m) => m.payload.toString())).not.toContain('retained-report');
    expect(await broker.retained(['config/+/reported'])).toEqual([]);
  });

  it('clears the retained message with an empty retained payload', async () => {
    await broker.publish('config/sensor-1/desired', Buffer.alloc(0), { qos: 1, retain: true });
    expect(await broker.retained(['config/+/desired'])).toEqual([]);
  });

  it('has the simulated device check the sha256, apply once, report again on a resend, and keep what it runs when withdrawn', async () => {
    const device = new ConfiguredDevice(
      'sensor-2',
      { url: `mqtts://127.0.0.1:${broker.addresses().mtls}`, ...creds['sensor-2']!, ca: trust },
      { refusing: false },
    );
    const reported = (n: number) =>
      arrivals.until(() => (reports.filter((m) => m.topic === 'config/sensor-2/reported').length >= n ? true : undefined), {
        timeoutMs: 10_000,
        timeoutMessage: () => `fewer than ${n} reports: ${JSON.stringify(reports.map((m) => m.payload.toString()))}`,
      });
    const last = () =>
      JSON.parse(
        reports
          .filter((m) => m.topic === 'config/sensor-2/reported')
          .at(-1)!
          .payload.toString(),
      ) as Record<string, unknown>;
    try {
      await device.ready;
      const values = { b: 2, a: 'x' };
      const send = (body: object) => broker.publish('config/sensor-2/desired', Buffer.from(JSON.stringify(body)), { qos: 1, retain: true });
      await send({ profile: 'p', version: 1, sha256: 'f'.repeat(64), values });
      await reported(1);
      expect(last()).toEqual({ profile: 'p', version: 1, sha256: 'f'.repeat(64), status: 'refused', error: 'sha256 does not match the values' });
      const good = { profile: 'p', version: 2, sha256: createHash('sha256').update(canonicalJson(values)).digest('hex'), values };
      await send(good);
      await reported(2);
      expect(last()).toMatchObject({ version: 2, status: 'applied' });
      await send(good);
      await reported(3);
      expect(last()).toMatchObject({ version: 2, status: 'applied' });
      expect(device.applied).toHaveLength(1);
      await broker.publish('config/sensor-2/desired', Buffer.alloc(0), { qos: 1, retain: true });
      await pollUntil(() => (device.events.some((e) => e.kind === 'withdrawn') ? true : undefined), { message: () => 'no withdrawal' });
      expect(device.current).toMatchObject({ version: 2 });
      expect(device.events.map((e) => e.kind)).toEqual(['refused', 'applied', 'repeated', 'withdrawn']);
    } finally {
      await device.stop();
    }
  });
});

describe('configuration topics on a real Mosquitto 2 with the generated ACLs, the agent on its external link', () => {
  let tmp: ReturnType<typeof tempDir>;
  let config: string;
  let broker: Mosquitto;
  let link: ExternalBroker;
  let port: number;
  let trust: string;
  const creds: Record<string, Creds> = {};
  const devices: Device[] = [];
  const reports: string[] = [];
  const arrivals = new Waiters();
  const dir = () => join(tmp.dir, 'broker');
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const device = async (id: string, clientId = id) => {
    // MQTT 5: Mosquitto answers a publish the ACL denies with a PUBACK reason code instead of silence.
    const d = await Device.connect(`mqtts://127.0.0.1:${port}`, clientId, creds[id]!, trust, 5);
    devices.push(d);
    return d;
  };

  beforeAll(async () => {
    tmp = tempDir();
    config = join(tmp.dir, 'agent.yaml');
    writeFileSync(config, `agent:\n  id: gw-cfg\n  dataDir: ${join(tmp.dir, 'data')}\nca:\n  crlFile: ${join(dir(), 'crl.pem')}\n`);
    expect((await cli('ca', 'init')).code).toBe(0);
    port = await freePort();
    const written = await cli('broker', 'mosquitto-config', '--out', dir(), '--provisioning-port', String(await freePort()), '--mtls-port', String(port));
    expect(written.code, written.stderr).toBe(0);
    const agentKey = await cli('ca', 'issue', '--profile', 'agent-client', '--id', 'gw-cfg', '--generate-key', '--out', join(tmp.dir, 'agent'));
    expect(agentKey.code, agentKey.stderr).toBe(0);
    for (const id of ['sensor-1', 'sensor-2']) {
      await opensslCsr(tmp.dir, id, 'ec-p256');
      const r = await cli('ca', 'issue', '--profile', 'mqtt-device', '--id', id, '--csr', join(tmp.dir, `${id}.csr`), '--out', join(tmp.dir, `${id}.pem`));
      expect(r.code, r.stderr).toBe(0);
      creds[id] = { key: readFileSync(join(tmp.dir, `${id}.key`), 'utf8'), cert: readFileSync(join(tmp.dir, `${id}.pem`), 'utf8') };
    }
    trust = readFileSync(join(dir(), 'ca.pem'), 'utf8');
    broker = await Mosquitto.start(join(dir(), 'mosquitto.conf'), dir(), [tmp.dir]);
    const agent = { key: readFileSync(join(tmp.dir, 'agent', 'key.pem'), 'utf8'), cert: readFileSync(join(tmp.dir, 'agent', 'cert.pem'), 'utf8'), ca: trust };
    link = new ExternalBroker({ log: silent, url: `mqtts://127.0.0.1:${port}`, clientId: 'gw-cfg-link', tls: () => agent });
    await link.start();
    expect(link.isConnected()).toBe(true);
    await link.subscribe(['config/+/reported'], (m) => {
      reports.push(`${m.retain ? 'retained ' : ''}${m.topic} ${m.payload.toString()}`);
      arrivals.wake();
    });
  }, 60_000);
  afterEach(() => {
    for (const d of devices.splice(0)) d.client.end(true);
  });
  afterAll(async () => {
    await link?.stop();
    await broker?.stop();
    tmp?.cleanup();
  });

  it('hands a device the retained desired configuration the agent published, and the agent its report', async () => {
    await link.publish('config/sensor-1/desired', Buffer.from('{"v":1}'), { qos: 1, retain: true });
    const d = await device('sensor-1');
    await d.client.subscribeAsync('config/sensor-1/desired', { qos: 1 });
    await d.received('config/sensor-1/desired {"v":1}');
    await d.client.publishAsync('config/sensor-1/reported', 'applied', { qos: 1 });
    await arrivals.until(() => reports.find((r) => r === 'config/sensor-1/reported applied'), {
      timeoutMs: 10_000,
      timeoutMessage: () => JSON.stringify(reports),
    });
  });

  it("gives another device nothing of a device's desired topic, retained or live, even on a wildcard", async () => {
    const d = await device('sensor-2');
    await d.client.subscribeAsync(['config/+/desired', 'config/sensor-1/desired'], { qos: 1 });
    // Published in this order on one connection, delivered in this order: once sensor-2 has its own, sensor-1's would be there too.
    await link.publish('config/sensor-1/desired', Buffer.from('{"v":2}'), { qos: 1, retain: true });
    await link.publish('config/sensor-2/desired', Buffer.from('{"own":1}'), { qos: 1, retain: true });
    await d.received('config/sensor-2/desired {"own":1}');
    expect(d.got.filter((l) => l.startsWith('config/sensor-1/'))).toEqual([]);
  });

  it("does not let a device write its own desired topic: the retained message stays the agent's", async () => {
    const d = await device('sensor-1');
    await d.client.publishAsync('config/sensor-1/desired', '{"v":666}', { qos: 1, retain: true }).catch(() => undefined);
    const reader = await device('sensor-1', 'sensor-1-reader');
    await reader.client.subscribeAsync('config/sensor-1/desired', { qos: 1 });
    await reader.received('config/sensor-1/desired {"v":2}');
    expect(reader.got).toEqual(['config/sensor-1/desired {"v":2}']);
  });

  it("drops a report a device publishes for another device, and the agent gets the device's own", async () => {
    const d = await device('sensor-2');
    await d.client.publishAsync('config/sensor-1/reported', 'forged', { qos: 1 }).catch(() => undefined);
    await d.client.publishAsync('config/sensor-2/reported', 'own', { qos: 1 });
    await arrivals.until(() => reports.find((r) => r === 'config/sensor-2/reported own'), { timeoutMs: 10_000, timeoutMessage: () => JSON.stringify(reports) });
    expect(reports.filter((r) => r.includes('forged'))).toEqual([]);
  });

  it('clears the retained message with an empty retained payload: a new subscriber gets only what follows', async () => {
    await link.publish('config/sensor-1/desired', Buffer.alloc(0), { qos: 1, retain: true });
    const d = await device('sensor-1');
    await d.client.subscribeAsync('config/sensor-1/desired', { qos: 1 });
    await link.publish('config/sensor-1/desired', Buffer.from('live'), { qos: 1 });
    await d.received('config/sensor-1/desired live');
    expect(d.got).toEqual(['config/sensor-1/desired live']);
  });

  it('marks a report the broker kept as retained when it hands it out again on a new subscription (the agent drops those)', async () => {
    const d = await device('sensor-2');
    await d.client.publishAsync('config/sensor-2/reported', 'kept', { qos: 1, retain: true });
    const until = (want: string) => arrivals.until(() => reports.find((r) => r === want), { timeoutMs: 10_000, timeoutMessage: () => JSON.stringify(reports) });
    // Live, it is news (Mosquitto clears the flag on forwarding: retain-as-published is off).
    await until('config/sensor-2/reported kept');
    // A repeated subscription (as after a reconnection) brings it back out of the retained store, flagged.
    await link.retained(['config/+/reported'], 200);
    await until('retained config/sensor-2/reported kept');
    await d.client.publishAsync('config/sensor-2/reported', '', { qos: 1, retain: true });
  });
});
