import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, runCli, tempDir } from '../../helpers/daemon.js';
import { deviceRequest, PREFIX, readPem, requestOnce, saveIssued, type Answer } from '../../helpers/enrollment.js';
import { agentWithMosquitto, type Mosquitto, publish, subscribe } from '../../helpers/mosquitto.js';
import { Waiters } from '../../helpers/waiters.js';
import { openssl } from '../../helpers/openssl.js';

describe('MQTT onboarding through a real Mosquitto 2 (config from broker mosquitto-config)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let config: string;
  let broker: Mosquitto;
  let daemon: Daemon;
  let ports: { provisioning: number; mtls: number };
  const dir = () => join(tmp.dir, 'broker');
  const cafile = () => join(dir(), 'ca.pem');
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const device = (name: string) => ({ cafile: cafile(), cert: join(tmp.dir, `${name}.crt`), key: join(tmp.dir, `${name}.key`) });
  const agent = () => ({
    cafile: cafile(),
    cert: join(tmp.dir, 'data', 'identity', 'agent-client.crt'),
    key: join(tmp.dir, 'data', 'identity', 'agent-client.key'),
  });

  async function token(): Promise<string> {
    const r = await cli('devices', 'token', 'create', '--json');
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { token: string }).token;
  }

  async function provision(name: string): Promise<Answer> {
    const r = await requestOnce(ports.provisioning, cafile(), name, await deviceRequest(tmp.dir, name, { enrollmentToken: await token() }));
    expect(r.answer?.status, r.output).toBe('issued');
    saveIssued(tmp.dir, name, r.answer!);
    return r.answer!;
  }

  beforeAll(async () => {
    tmp = tempDir();
    ({ config, broker, ports } = await agentWithMosquitto(tmp.dir, [
      'agent:',
      '  id: gw-mq',
      `  dataDir: ${join(tmp.dir, 'data')}`,
      '  heartbeatIntervalMs: 200',
      'http:',
      '  port: 0',
    ]));
    daemon = Daemon.start(config);
    await daemon.ready();
    await daemon.waitForLog((l) => l.msg === 'connected to the MQTT broker');
  }, 60_000);
  afterAll(async () => {
    await daemon?.dispose();
    await broker?.stop();
    tmp?.cleanup();
  });

  it('enrolls a device made with openssl req through mosquitto_rr; the agent then sees its mutual-TLS messages', async () => {
    const answer = await provision('pump-1');
    expect(answer.brokerUrl).toBe(`mqtts://127.0.0.1:${ports.mtls}`);
    const verify = await openssl(['verify', '-CAfile', cafile(), '-purpose', 'sslclient', device('pump-1').cert], tmp.dir);
    expect(verify.stdout, verify.stderr).toContain('OK');
    const watcher = subscribe(ports.mtls, agent(), 'devices/#', { seconds: 10 });
    await watcher.ready;
    const pub = await publish(ports.mtls, device('pump-1'), 'devices/pump-1/flow', '3.2');
    expect(pub.code, pub.output).toBe(0);
    expect(await watcher.done).toEqual(['devices/pump-1/flow 3.2']);
  });

  it('refuses a certificate from the RSA issuing CA (OPC UA) even when its CN is the agent id', async () => {
    const out = join(tmp.dir, 'ua-app');
    const issued = await cli(
      'ca',
      'issue',
      '--profile',
      'opcua-application',
      '--id',
      'urn:plant:hmi',
      '--cn',
      'gw-mq',
      '--generate-key',
      '--key-type',
      'rsa-2048',
      '--out',
      out,
    );
    expect(issued.code, issued.stderr).toBe(0);
    const tls = { cafile: cafile(), cert: join(out, 'cert.pem'), key: join(out, 'key.pem') };
    expect((await publish(ports.mtls, tls, 'devices/x/y', 'as the agent')).code).not.toBe(0);
    expect((await publish(ports.mtls, agent(), 'devices/x/y', 'the agent itself')).code).toBe(0);
  });

  it('honours an MQTT 5 response topic and correlation data', async () => {
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.provisioning}`, {
      clientId: 'pump-2',
      protocolVersion: 5,
      ca: readPem(cafile()),
      reconnectPeriod: 0,
    });
    const responseTopic = `${PREFIX}/pump-2/response/call-7`;
    const answered = new Promise<{ topic: string; body: Answer; correlation?: Buffer }>((resolve) =>
      client.on('message', (topic, payload, packet) =>
        resolve({
          topic,
          body: JSON.parse(payload.toString()) as Answer,
          ...(packet.properties?.correlationData ? { correlation: packet.properties.correlationData } : {}),
        }),
      ),
    );
    await client.subscribeAsync(responseTopic, { qos: 1 });
    const request = await deviceRequest(tmp.dir, 'pump-2', { enrollmentToken: await token() });
    await client.publishAsync(`${PREFIX}/pump-2/request`, JSON.stringify(request), {
      qos: 1,
      properties: { responseTopic, correlationData: Buffer.from('corr-42') },
    });
    const got = await answered;
    await client.endAsync();
    expect(got.topic).toBe(responseTopic);
    expect(got.correlation?.toString()).toBe('corr-42');
    expect(got.body).toMatchObject({ requestId: 'pump-2-r1', status: 'issued' });
  });

  it('answers a request whose response topic has a wildcard on the default topic, rejected, and stays connected', async () => {
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.provisioning}`, {
      clientId: 'pump-9',
      protocolVersion: 5,
      ca: readPem(cafile()),
      reconnectPeriod: 0,
    });
    const answers: Answer[] = [];
    const arrived = new Waiters();
    client.on('message', (_t, payload) => {
      answers.push(JSON.parse(payload.toString()) as Answer);
      arrived.wake();
    });
    const answer = (n: number) =>
      arrived.until(() => answers[n], { timeoutMs: 15_000, timeoutMessage: () => `answer ${n + 1} did not arrive; got ${JSON.stringify(answers)}` });
    await client.subscribeAsync(`${PREFIX}/pump-9/response`, { qos: 1 });
    const request = await deviceRequest(tmp.dir, 'pump-9', { enrollmentToken: await token() });
    await client.publishAsync(`${PREFIX}/pump-9/request`, JSON.stringify(request), { qos: 1, properties: { responseTopic: `${PREFIX}/pump-9/response/#` } });
    expect(await answer(0)).toMatchObject({ status: 'rejected', reason: expect.stringMatching(/without wildcards/) });
    // The agent's link is still up: a second request gets its answer over it (had Mosquitto dropped the
    // agent for a wildcard publish, this answer would come only after a reconnect, logged as such).
    await client.publishAsync(`${PREFIX}/pump-9/request`, JSON.stringify(request), { qos: 1 });
    expect(await answer(1)).toMatchObject({ requestId: 'pump-9-r1', status: 'issued' });
    await client.endAsync();
    expect(daemon.logs.filter((l) => l.msg === 'MQTT broker unreachable; reconnecting')).toEqual([]);
  });

  it("does not let a provisioning client publish to another device's request topic", async () => {
    const own = await requestOnce(ports.provisioning, cafile(), 'pump-3', await deviceRequest(tmp.dir, 'pump-3'));
    expect(own.answer?.status, own.output).toBe('pending');
    const other = await requestOnce(ports.provisioning, cafile(), 'pump-4', await deviceRequest(tmp.dir, 'pump-4', { enrollmentToken: await token() }), {
      clientId: 'pump-3',
      seconds: 2,
    });
    expect(other.answer).toBeUndefined();
    expect((await cli('devices', 'show', 'pump-4')).code).not.toBe(0);
  });

  it(
    'cuts a revoked device off without restarting Mosquitto: its connection under its id is taken over, ' +
      'another one can do nothing, a new one fails at TLS; other devices keep working',
    async () => {
      await provision('pump-5');
      await provision('pump-6');
      const watcher = subscribe(ports.mtls, agent(), 'devices/#', { count: 3, seconds: 20 });
      await watcher.ready;
      // pump-5 twice: under its device id as client id (the agent can take that over), and under a random one.
      const underId = await connectMqtt5(device('pump-5'), 'pump-5');
      const underOther = await connectMqtt5(device('pump-5'), `pump-5-${Math.random().toString(16).slice(2, 8)}`);
      const pump6 = await connectMqtt5(device('pump-6'), `pump-6-${Math.random().toString(16).slice(2, 8)}`);
      const closed = new Promise<void>((resolve) => underId.once('close', () => resolve()));
      await underOther.publishAsync('devices/pump-5/x', 'before', { qos: 1 });

      const since = broker.mark();
      const revoke = await cli('devices', 'revoke', 'pump-5', '--reason', 'superseded', '--note', 'replaced');
      expect(revoke.code, revoke.stderr).toBe(0);
      expect(revoke.stdout).toContain('revoked');
      await daemon.waitForLog((l) => l.msg === 'Mosquitto ACL rewritten and reloaded' && String(l.why).includes('pump-5'));
      await broker.waitForLog(/Reloading config/, { since });
      // The agent took the client id pump-5 over: Mosquitto closed the device's connection.
      await closed;
      await broker.waitForLog(/Client pump-5 already connected, closing old connection/, { since });
      await daemon.waitForLog((l) => l.msg === 'client id of a cut-off device taken over on Mosquitto' && l.device === 'pump-5');
      // The connection under another client id stays open, but the reloaded ACL refuses everything:
      // an MQTT 5 publish is answered PUBACK 0x87 (not authorized), without a disconnect.
      await expect(underOther.publishAsync('devices/pump-5/x', 'after', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
      expect(underOther.connected).toBe(true);
      // A new connection fails at the TLS handshake: Mosquitto reread the CRL on the same SIGHUP.
      const mark = broker.mark();
      expect((await publish(ports.mtls, device('pump-5'), 'devices/pump-5/x', 'again')).code).not.toBe(0);
      await broker.waitForLog(/certificate verify failed/, { since: mark });

      await pump6.publishAsync('devices/pump-6/x', 'other', { qos: 1 });
      expect((await publish(ports.mtls, device('pump-6'), 'devices/pump-6/x', 'other-2')).code).toBe(0);
      expect(await watcher.done).toEqual(['devices/pump-5/x before', 'devices/pump-6/x other', 'devices/pump-6/x other-2']);
      expect(readFileSync(join(dir(), 'acl-devices'), 'utf8')).toMatch(/user pump-5\ntopic deny #/);
      await Promise.all([underOther.endAsync(true), pump6.endAsync()]);
    },
  );

  it('hands a CRL changed outside a device decision (a certificate revoked through the API) to Mosquitto at once', async () => {
    await provision('pump-7');
    const serial = new X509Certificate(readPem(device('pump-7').cert)).serialNumber.toLowerCase();
    expect((await publish(ports.mtls, device('pump-7'), 'devices/pump-7/x', 'before')).code).toBe(0);
    const since = broker.mark();
    const from = daemon.logs.length;
    const revoked = await cli('certs', 'revoke', serial, '--reason', 'keyCompromise');
    expect(revoked.code, revoked.stderr).toBe(0);
    await daemon.waitForLog((l) => l.msg === 'Mosquitto ACL rewritten and reloaded' && l.why === 'CRL changed', 15_000, from);
    await broker.waitForLog(/Reloading config/, { since });
    const mark = broker.mark();
    expect((await publish(ports.mtls, device('pump-7'), 'devices/pump-7/x', 'after')).code).not.toBe(0);
    await broker.waitForLog(/certificate verify failed/, { since: mark });
  });

  it('answers a request over mqtt.maxPayloadBytes rejected, with the limit and its requestId', async () => {
    const request = await deviceRequest(tmp.dir, 'pump-big', { firmware: 'x'.repeat(20_000) });
    const r = await requestOnce(ports.provisioning, cafile(), 'pump-big', request, { seconds: 10 });
    expect(r.answer, r.output).toMatchObject({
      requestId: 'pump-big-r1',
      status: 'rejected',
      reason: expect.stringMatching(/over the limit of 16384 bytes \(mqtt\.maxPayloadBytes\)/),
    });
  });

  async function connectMqtt5(tls: { cafile: string; cert: string; key: string }, clientId: string) {
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.mtls}`, {
      clientId,
      protocolVersion: 5,
      ca: readPem(tls.cafile),
      cert: readPem(tls.cert),
      key: readPem(tls.key),
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    });
    // A connection the broker ends is expected here; an 'error' without a listener would end the test process.
    client.on('error', () => undefined);
    return client;
  }
});
