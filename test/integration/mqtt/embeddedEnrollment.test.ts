import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import sparkplugPayload from 'sparkplug-payload';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { deviceRequest, NAMEPLATE, PREFIX, readPem, requestOnce, saveIssued, type Answer } from '../../helpers/enrollment.js';
import { freePort, publish } from '../../helpers/mosquitto.js';
import { openssl, opensslCsr } from '../../helpers/openssl.js';
import { apiUser } from '../../helpers/apiUser.js';
import { Waiters } from '../../helpers/waiters.js';

const codec = sparkplugPayload.get('spBv1.0')!;

describe('MQTT onboarding through the embedded broker (real daemon, openssl, mosquitto clients)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let ports: { provisioning: number; mtls: number };
  let cafile: string;
  let base: string;
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const enroll = (name: string, payload: string | Record<string, unknown>, clientId?: string) =>
    requestOnce(ports.provisioning, cafile, name, payload, { v5: false, ...(clientId ? { clientId } : {}) });
  const show = async (name: string) => {
    const r = await cli('devices', 'show', name, '--json');
    return r.code === 0
      ? (JSON.parse(r.stdout) as {
          device: { state: string; online: boolean; lastSeen: string; source: Record<string, unknown>; nameplate: Record<string, string> };
          history: { cause: string }[];
        })
      : undefined;
  };
  const connectDevice = (name: string) =>
    mqtt.connectAsync(`mqtts://127.0.0.1:${ports.mtls}`, {
      clientId: `${name}-${Math.random().toString(16).slice(2, 8)}`,
      key: readPem(join(tmp.dir, `${name}.key`)),
      cert: readPem(join(tmp.dir, `${name}.crt`)),
      ca: readPem(cafile),
      reconnectPeriod: 0,
      connectTimeout: 5_000,
    });

  async function token(uses = 1, expires = '1h'): Promise<string> {
    const r = await cli('devices', 'token', 'create', '--uses', String(uses), '--expires', expires, '--json');
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { token: string }).token;
  }

  async function provision(name: string): Promise<Answer> {
    const r = await enroll(name, await deviceRequest(tmp.dir, name, { enrollmentToken: await token() }));
    expect(r.answer?.status, r.output).toBe('issued');
    saveIssued(tmp.dir, name, r.answer!);
    return r.answer!;
  }

  beforeAll(async () => {
    tmp = tempDir();
    ports = { provisioning: await freePort(), mtls: await freePort() };
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-e2e',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        '  heartbeatIntervalMs: 200',
        'http:',
        '  port: 0',
        'mqtt:',
        '  actionPollMs: 100',
        '  policy:',
        '    rules:',
        '      - { kind: token, action: approve }',
        "      - { kind: allowlist, manufacturer: 'Evil*', action: reject }",
        '    default: hold',
        '',
      ].join('\n'),
    );
    // Ports through the environment: the test helpers default them to 0 there, which would override the file.
    daemon = Daemon.start(config, { env: { EDGE_AGENT_MQTT_PROVISIONING_PORT: String(ports.provisioning), EDGE_AGENT_MQTT_MTLS_PORT: String(ports.mtls) } });
    base = await daemon.ready();
    cafile = join(tmp.dir, 'ca.pem');
    writeFileSync(cafile, await (await fetch(`${base}/ca/chain`)).text());
  }, 60_000);
  afterAll(async () => {
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('issues a certificate for a valid token; openssl verifies it; the device then publishes over mutual TLS', async () => {
    const answer = await provision('dev-1');
    expect(answer).toMatchObject({ requestId: 'dev-1-r1', status: 'issued', brokerUrl: `mqtts://127.0.0.1:${ports.mtls}` });
    const verify = await openssl(['verify', '-CAfile', cafile, '-purpose', 'sslclient', join(tmp.dir, 'dev-1.crt')], tmp.dir);
    expect(verify.stdout, verify.stderr).toContain('OK');
    const subject = await openssl(['x509', '-in', join(tmp.dir, 'dev-1.crt'), '-noout', '-subject'], tmp.dir);
    expect(subject.stdout).toMatch(/CN ?= ?dev-1\b/);

    const listener = await connectDevice('dev-1');
    const got = new Promise<string>((resolve) => listener.on('message', (_t, p) => resolve(p.toString())));
    await listener.subscribeAsync('devices/dev-1/#', { qos: 1 });
    const pub = await publish(ports.mtls, { cafile, cert: join(tmp.dir, 'dev-1.crt'), key: join(tmp.dir, 'dev-1.key') }, 'devices/dev-1/temperature', '21.5');
    expect(pub.code, pub.output).toBe(0);
    expect(await got).toBe('21.5');
    expect((await show('dev-1'))?.device).toMatchObject({ state: 'provisioned', online: true });
    await listener.endAsync();
    await waitFor(async () => (await show('dev-1'))?.device.online === false);
  });

  it('answers the same request again with the same certificate, and issues no second one', async () => {
    const again = await enroll('dev-1', { ...(await deviceRequest(tmp.dir, 'dev-1-copy')), requestId: 'dev-1-r1', csr: readPem(join(tmp.dir, 'dev-1.csr')) });
    expect(again.answer?.status, again.output).toBe('issued');
    expect(again.answer?.certificate).toBe(readPem(join(tmp.dir, 'dev-1.crt')).split(/(?<=-----END CERTIFICATE-----\n)/)[0]);
    const list = await cli('ca', 'list', '--json');
    expect((JSON.parse(list.stdout) as { identity: string }[]).filter((c) => c.identity === 'dev-1')).toHaveLength(1);
  });

  it('holds a device no rule approves; a technician approves it and the waiting device gets its certificate', async () => {
    const request = await deviceRequest(tmp.dir, 'dev-2');
    const held = await enroll('dev-2', request);
    expect(held.answer).toMatchObject({ requestId: 'dev-2-r1', status: 'pending' });
    expect((await show('dev-2'))?.device.state).toBe('pending');

    const waiting = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.provisioning}`, { clientId: 'dev-2', ca: readPem(cafile), reconnectPeriod: 0 });
    const issued = new Promise<Answer>((resolve) => waiting.on('message', (_t, p) => resolve(JSON.parse(p.toString()) as Answer)));
    await waiting.subscribeAsync(`${PREFIX}/dev-2/response`, { qos: 1 });
    const approve = await cli('devices', 'approve', 'dev-2', '--reason', 'checked on site', '--token', await apiUser(config, 'tech-a', 'technician'));
    expect(approve.code, approve.stderr).toBe(0);
    expect(approve.stdout).toContain('issued');
    const answer = await issued;
    await waiting.endAsync();
    expect(answer).toMatchObject({ requestId: 'dev-2-r1', status: 'issued' });
    saveIssued(tmp.dir, 'dev-2', answer);
    const shown = await show('dev-2');
    expect(shown?.device.state).toBe('provisioned');
    expect(shown?.history.map((e) => e.cause).join('\n')).toContain('approved by tech-a: checked on site');
  });

  it('cuts a revoked device off at once and refuses its reconnection, while another device stays connected', async () => {
    const revoked = await connectDevice('dev-1');
    const other = await connectDevice('dev-2');
    const closed = new Promise<void>((resolve) => revoked.once('close', () => resolve()));
    const r = await cli('devices', 'revoke', 'dev-1', '--reason', 'keyCompromise', '--note', 'stolen');
    expect(r.code, r.stderr).toBe(0);
    await closed;
    expect(other.connected).toBe(true);
    const got = new Promise<string>((resolve) => other.on('message', (_t, p) => resolve(p.toString())));
    await other.subscribeAsync('devices/dev-2/#', { qos: 1 });
    await other.publishAsync('devices/dev-2/still', 'here', { qos: 1 });
    expect(await got).toBe('here');
    await other.endAsync();
    await expect(connectDevice('dev-1')).rejects.toThrow();
    expect((await show('dev-1'))?.device.state).toBe('revoked');
    // Last seen: when its (last) connection closed.
    await waitFor(async () => (await show('dev-1'))?.device.online === false);
    const lastSeen = (await show('dev-1'))!.device.lastSeen;

    // Anyone may send a request under a revoked id: it waits for a technician and changes nothing, last seen included.
    const csr = await opensslCsr(tmp.dir, 'dev-1-new', 'ec-p256', { subject: '/CN=dev-1' });
    const spoof = await enroll('dev-1', {
      requestId: 'dev-1-r9',
      csr,
      nameplate: { manufacturer: 'Spoofed', model: 'X', serialNumber: '0' },
      enrollmentToken: await token(),
    });
    expect(spoof.answer).toMatchObject({ status: 'pending', reason: expect.stringMatching(/technician revoked/) });
    expect((await show('dev-1'))?.device).toMatchObject({ state: 'revoked', nameplate: { manufacturer: 'Acme Sensors' }, lastSeen });
    // Nor does a technician's decision about it: that is no sign of the device either.
    const rejected = await cli('devices', 'reject', 'dev-1', '--reason', 'spoofed request');
    expect(rejected.code, rejected.stderr).toBe(0);
    expect((await show('dev-1'))?.device).toMatchObject({ state: 'revoked', lastSeen });
  }, 90_000);

  it('keeps a provisioning client to its own request topic', async () => {
    const own = await enroll('dev-5', await deviceRequest(tmp.dir, 'dev-5'));
    expect(own.answer?.status, own.output).toBe('pending');
    const other = await enroll('dev-6', await deviceRequest(tmp.dir, 'dev-6', { enrollmentToken: await token() }), 'dev-5');
    expect(other.answer).toBeUndefined();
    expect(await show('dev-6')).toBeUndefined();
  });

  it.each([
    ['not JSON', 'bad-1', () => Promise.resolve('{nope'), /not valid JSON/, null],
    [
      'a prototype key',
      'bad-2',
      async () => JSON.stringify(await deviceRequest(tmp.dir, 'bad-2')).replace('{', '{"__proto__":{"x":1},'),
      /forbidden key "__proto__"/,
      'bad-2-r1',
    ],
    ['an unknown key', 'bad-3', async () => ({ ...(await deviceRequest(tmp.dir, 'bad-3')), admin: true }), /admin|unrecognized/i, 'bad-3-r1'],
    [
      'a CSR for another CN',
      'bad-4',
      async () => ({ ...(await deviceRequest(tmp.dir, 'someone-else')), requestId: 'bad-4-r1' }),
      /CN "someone-else"/,
      'bad-4-r1',
    ],
    [
      'two PEM blocks as the CSR',
      'bad-6',
      async () => {
        const r = await deviceRequest(tmp.dir, 'bad-6');
        return { ...r, csr: `${r.csr as string}${r.csr as string}` };
      },
      /one PEM block/,
      'bad-6-r1',
    ],
    [
      'the id of the gateway itself',
      'gw-e2e',
      async () => deviceRequest(tmp.dir, 'gw-e2e', { enrollmentToken: await token() }),
      /reserved for the gateway/,
      'gw-e2e-r1',
    ],
    [
      'a CSR that is not one',
      'bad-5',
      async () => ({ ...(await deviceRequest(tmp.dir, 'bad-5')), csr: '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n' }),
      /CSR_MALFORMED/,
      'bad-5-r1',
    ],
    [
      'valid JSON nested 5,000 deep',
      'bad-7',
      () => Promise.resolve(`{"requestId":"bad-7-r1","x":${'['.repeat(5000)}${']'.repeat(5000)}}`),
      /nested too deeply/,
      'bad-7-r1',
    ],
  ])('rejects a request with %s and records nothing', async (_what, name, payload, reason, requestId) => {
    const r = await enroll(name, await payload());
    expect(r.answer?.status, r.output).toBe('rejected');
    expect(r.answer?.requestId).toBe(requestId);
    expect(r.answer?.reason).toMatch(reason);
    expect(await show(name)).toBeUndefined();
  });

  it('counts every refusal in /metrics by reason, so a flood of bad requests shows', async () => {
    const read = async () => {
      const text = await (await fetch(`${base}/metrics`)).text();
      const value = (series: string) => Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
      return {
        rejected: value('edge_agent_enrollment_requests_total{outcome="rejected"}'),
        reasons: Object.fromEntries(
          ['not_json', 'schema', 'csr_malformed', 'too_deeply_nested'].map((r) => [r, value(`edge_agent_enrollment_rejected_total{reason="${r}"}`)]),
        ),
      };
    };
    const before = await read();
    const good = await deviceRequest(tmp.dir, 'flood');
    const bad: [string, string | Record<string, unknown>][] = [
      ['flood-1', 'nope'],
      ['flood-2', '{"requestId":'],
      ['flood-3', { ...good, requestId: 'f3', nameplate: {} }],
      ['flood-4', { ...good, requestId: 'f4', csr: '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n' }],
      ['flood-5', `[${'{"a":'.repeat(40)}1${'}'.repeat(40)}]`],
    ];
    for (const [name, payload] of bad) {
      const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.provisioning}`, { clientId: name, ca: readPem(cafile), reconnectPeriod: 0 });
      const answered = new Promise<Answer>((resolve) => client.on('message', (_t, p) => resolve(JSON.parse(p.toString()) as Answer)));
      await client.subscribeAsync(`${PREFIX}/${name}/response`, { qos: 1 });
      await client.publishAsync(`${PREFIX}/${name}/request`, typeof payload === 'string' ? payload : JSON.stringify(payload), { qos: 1 });
      expect((await answered).status).toBe('rejected');
      await client.endAsync();
    }
    // Every refusal is counted before it is answered.
    const after = await read();
    expect(after.rejected - before.rejected).toBe(5);
    expect(Object.fromEntries(Object.entries(after.reasons).map(([r, n]) => [r, n - before.reasons[r]!]))).toEqual({
      not_json: 2,
      schema: 1,
      csr_malformed: 1,
      too_deeply_nested: 1,
    });
  });

  it('drops requests beyond the per-device rate limit without answering', async () => {
    const request = await deviceRequest(tmp.dir, 'chatty');
    const dropped = async () =>
      Number(/^edge_agent_enrollment_dropped_total\{reason="rate_limited_device"\} (\d+)$/m.exec(await (await fetch(`${base}/metrics`)).text())?.[1] ?? 0);
    const before = await dropped();
    // Four requests at once from one connection: the burst of 3 refills one per 10 s, which a slow
    // machine could reach between four separate mosquitto_rr runs.
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.provisioning}`, { clientId: 'chatty', ca: readPem(cafile), reconnectPeriod: 0 });
    const answers: Answer[] = [];
    const arrived = new Waiters();
    client.on('message', (_t, p) => {
      answers.push(JSON.parse(p.toString()) as Answer);
      arrived.wake();
    });
    await client.subscribeAsync(`${PREFIX}/chatty/response`, { qos: 1 });
    // Each PUBACK comes after the agent took the message in (and counted a drop).
    for (let i = 1; i <= 4; i++) await client.publishAsync(`${PREFIX}/chatty/request`, JSON.stringify({ ...request, requestId: `chatty-r${i}` }), { qos: 1 });
    expect(await dropped()).toBe(before + 1);
    await arrived.until(() => (answers.length >= 3 ? true : undefined), { timeoutMs: 15_000, timeoutMessage: () => `answers: ${JSON.stringify(answers)}` });
    await client.endAsync();
    expect(answers.map((a) => `${a.requestId} ${a.status}`).sort()).toEqual(['chatty-r1 pending', 'chatty-r2 pending', 'chatty-r3 pending']);
  });

  it('gives a token use back when the CA refuses the CSR after policy approved it', async () => {
    const once = await token(1);
    const csr = await opensslCsr(tmp.dir, 'ca-wannabe', 'ec-p256', { addext: ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign'] });
    const refused = await enroll('ca-wannabe', { requestId: 'cw-1', csr, nameplate: NAMEPLATE, enrollmentToken: once });
    expect(refused.answer).toMatchObject({ status: 'rejected', reason: expect.stringMatching(/CSR_REQUESTS_CA/) });
    expect((await enroll('tok-9', await deviceRequest(tmp.dir, 'tok-9', { enrollmentToken: once }))).answer?.status).toBe('issued');
  });

  it('rejects a used-up or revoked token, and a manufacturer on the reject list', async () => {
    const used = await token(1);
    expect((await enroll('tok-1', await deviceRequest(tmp.dir, 'tok-1', { enrollmentToken: used }))).answer?.status).toBe('issued');
    const second = await enroll('tok-2', await deviceRequest(tmp.dir, 'tok-2', { enrollmentToken: used }));
    expect(second.answer).toMatchObject({ status: 'rejected', reason: expect.stringMatching(/used up/) });
    // A token revoked through the daemon (devices token revoke) enrolls nothing more.
    const made = await cli('devices', 'token', 'create', '--uses', '5', '--json');
    const { token: ended, record } = JSON.parse(made.stdout) as { token: string; record: { id: string } };
    expect((await cli('devices', 'token', 'revoke', record.id)).code).toBe(0);
    const afterRevoke = await enroll('tok-4', await deviceRequest(tmp.dir, 'tok-4', { enrollmentToken: ended }));
    expect(afterRevoke.answer).toMatchObject({ status: 'rejected', reason: `enrollment token ${record.id} was revoked` });
    const evil = await deviceRequest(tmp.dir, 'tok-3');
    const rejected = await enroll('tok-3', { ...evil, nameplate: { manufacturer: 'Evil Corp', model: 'X', serialNumber: '1' } });
    expect(rejected.answer).toMatchObject({ status: 'rejected', reason: expect.stringMatching(/allowlist manufacturer=Evil/) });
    // A device the inventory does not know, refused by policy, is answered but not recorded.
    expect(await show('tok-3')).toBeUndefined();
    expect(await show('tok-2')).toBeUndefined();
  });

  it('records Sparkplug births and deaths of an enrolled node in the inventory', async () => {
    const tls = { cafile, cert: join(tmp.dir, 'dev-2.crt'), key: join(tmp.dir, 'dev-2.key') };
    const birth = join(tmp.dir, 'nbirth.bin');
    writeFileSync(
      birth,
      codec.encodePayload({
        timestamp: Date.now(),
        seq: 0,
        metrics: [
          { name: 'bdSeq', type: 'UInt64', value: 3 },
          { name: 'Properties/Hardware Make', type: 'String', value: 'Acme Sensors' },
          { name: 'Properties/Hardware Model', type: 'String', value: 'TS-100' },
        ],
      }),
    );
    const dbirth = join(tmp.dir, 'dbirth.bin');
    writeFileSync(
      dbirth,
      codec.encodePayload({ timestamp: Date.now(), seq: 1, metrics: [{ name: 'Properties/Serial Number', type: 'String', value: 'M-77' }] }),
    );
    const pubFile = (topic: string, file: string) => publish(ports.mtls, tls, topic, '', undefined, file);
    expect((await pubFile('spBv1.0/line1/NBIRTH/dev-2', birth)).code).toBe(0);
    expect((await pubFile('spBv1.0/line1/DBIRTH/dev-2/meter-1', dbirth)).code).toBe(0);
    await waitFor(async () => (await show('dev-2.meter-1'))?.device.state === 'discovered');
    const meter = await show('dev-2.meter-1');
    expect(meter?.device).toMatchObject({ online: true, nameplate: { serialNumber: 'M-77' } });
    await waitFor(async () => Boolean((await show('dev-2'))?.device.source.sparkplug));
    const death = join(tmp.dir, 'ddeath.bin');
    writeFileSync(death, codec.encodePayload({ timestamp: Date.now(), seq: 2, metrics: [] }));
    expect((await pubFile('spBv1.0/line1/DDEATH/dev-2/meter-1', death)).code).toBe(0);
    await waitFor(async () => (await show('dev-2.meter-1'))?.device.online === false);
  });
});

/** Each check may be a CLI run, seconds long on a loaded machine: the deadline leaves room for several. */
async function waitFor(check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}
