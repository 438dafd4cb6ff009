import { describe, expect, it } from 'vitest';
import { devicesAcl } from '../../agent/broker/mosquittoAcl.js';
import pino from 'pino';
import { desiredPayload, MqttConfig, parseReport } from '../../agent/configuration/mqttConfig.js';
import type { ConfigurationHub, DesiredConfig, DeviceReport } from '../../agent/configuration/types.js';
import type { BrokerLink, MessageHandler, OutboundOptions } from '../../agent/transport/types.js';
import { configRootProblem, TopicAcl } from '../../agent/transport/brokerAcl.js';

const PREFIX = 'edge/prov/v1';

describe('the embedded broker ACL for configuration topics', () => {
  const acl = new TopicAcl(PREFIX, 'config');
  const other = new TopicAcl(PREFIX, 'plant-cfg');

  it.each([
    ['its own reported topic', 'config/sensor-1/reported', true],
    ['its own desired topic (only the agent writes it)', 'config/sensor-1/desired', false],
    ["another device's reported topic", 'config/sensor-2/reported', false],
    ["another device's desired topic", 'config/sensor-2/desired', false],
    ['a level below its reported topic', 'config/sensor-1/reported/x', false],
    ['the bare root', 'config', false],
  ])('a device on mutual TLS may publish to %s: %s', (_name, topic, allowed) => {
    expect(acl.mayPublish('mtls', 'sensor-1', topic as string)).toBe(allowed);
  });

  it.each([
    ['its own desired topic', 'config/sensor-1/desired', true],
    ['its own reported topic', 'config/sensor-1/reported', false],
    ["another device's desired topic", 'config/sensor-2/desired', false],
    ['every desired topic (a wildcard)', 'config/+/desired', false],
    ['everything under its id (a wildcard)', 'config/sensor-1/#', false],
    ['everything under the root', 'config/#', false],
  ])('a device on mutual TLS may subscribe to and receive %s: %s', (_name, topic, allowed) => {
    expect(acl.maySubscribe('mtls', 'sensor-1', topic as string)).toBe(allowed);
    expect(acl.mayReceive('mtls', 'sensor-1', topic as string)).toBe(allowed);
  });

  it('gives a provisioning client no configuration topic at all', () => {
    expect(acl.mayPublish('provisioning', 'sensor-1', 'config/sensor-1/reported')).toBe(false);
    expect(acl.mayReceive('provisioning', 'sensor-1', 'config/sensor-1/desired')).toBe(false);
  });

  it('follows configuration.topicRoot: the default root is then just another topic a device may not use', () => {
    expect(other.mayPublish('mtls', 'sensor-1', 'plant-cfg/sensor-1/reported')).toBe(true);
    expect(other.mayReceive('mtls', 'sensor-1', 'plant-cfg/sensor-1/desired')).toBe(true);
    expect(other.mayPublish('mtls', 'sensor-1', 'config/sensor-1/reported')).toBe(false);
    expect(other.mayReceive('mtls', 'sensor-1', 'config/sensor-1/desired')).toBe(false);
  });

  it('refuses retain on configuration topics only (a retained report would be handed out again as news)', () => {
    expect(acl.mayRetain('config/vib-00001/reported')).toBe(false);
    expect(other.mayRetain('plant-cfg/vib-00001/reported')).toBe(false);
    expect(other.mayRetain('config/vib-00001/reported')).toBe(true);
    expect(acl.mayRetain('homie/vib-00001/$state')).toBe(true);
  });

  it('keeps the rules it had: own namespace, announcements, own provisioning topics', () => {
    expect(acl.mayPublish('mtls', 'sensor-1', 'devices/sensor-1/t')).toBe(true);
    expect(acl.mayReceive('mtls', 'sensor-1', 'devices/sensor-1/#')).toBe(true);
    expect(acl.mayPublish('mtls', 'sensor-1', `${PREFIX}/sensor-1/request`)).toBe(true);
    expect(acl.mayReceive('mtls', 'sensor-1', `${PREFIX}/sensor-1/response`)).toBe(true);
  });
});

describe('the generated Mosquitto ACL for configuration topics', () => {
  const lines = (text: string) => text.split('\n');

  it('lets the agent write every desired topic and read every report', () => {
    const text = lines(devicesAcl('gw', PREFIX, [], 'config'));
    const agent = text.slice(text.indexOf('user gw'), text.indexOf('', text.indexOf('user gw')));
    expect(agent).toEqual(expect.arrayContaining(['topic write config/+/desired', 'topic read config/+/reported']));
  });

  it('gives every device read of its own desired topic and write of its own reported topic, nothing wider', () => {
    const text = lines(devicesAcl('gw', PREFIX, [], 'config'));
    const config = text.filter((l) => / config\//.test(l) && l.startsWith('pattern'));
    expect(config).toEqual(['pattern read config/%u/desired', 'pattern write config/%u/reported']);
  });

  it('keeps a cut-off device denied everything, configuration included', () => {
    const text = lines(devicesAcl('gw', PREFIX, ['sensor-9'], 'config'));
    const at = text.indexOf('user sensor-9');
    expect(text.slice(at, at + 2)).toEqual(['user sensor-9', 'topic deny #']);
  });

  it('uses configuration.topicRoot', () => {
    const text = devicesAcl('gw', PREFIX, [], 'plant-cfg');
    expect(text).toContain('pattern read plant-cfg/%u/desired');
    expect(text).toContain('topic write plant-cfg/+/desired');
    expect(text).not.toMatch(/ config\//);
  });
});

describe('configuration.topicRoot beside the other topics', () => {
  it.each(['devices', 'spBv1.0', 'homie', 'homeassistant', 'edge'])('refuses %s, the first level of other topics', (root) => {
    expect(configRootProblem(root, PREFIX)).toMatch(/is the first level of other topics/);
  });
  it('accepts config', () => expect(configRootProblem('config', PREFIX)).toBeUndefined());
});

describe('a device report', () => {
  const sha = 'a'.repeat(64);
  const parse = (body: unknown) => parseReport(Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)));

  it('takes an applied report, and a refusal with its error', () => {
    expect(parse({ profile: 'vib', version: 2, sha256: sha, status: 'applied' })).toEqual({ profile: 'vib', version: 2, sha256: sha, status: 'applied' });
    expect(parse({ profile: 'vib', version: 2, status: 'refused', error: 'threshold too low' })).toEqual({
      profile: 'vib',
      version: 2,
      status: 'refused',
      error: 'threshold too low',
    });
  });

  it.each([
    ['not JSON', '{"profile":', /not JSON/],
    ['a JSON array', [], /report/],
    ['no profile', { version: 1, status: 'applied' }, /profile/],
    ['a version of 0', { profile: 'p', version: 0, status: 'applied' }, /version/],
    ['a fractional version', { profile: 'p', version: 1.5, status: 'applied' }, /version/],
    ['a version as text', { profile: 'p', version: '1', status: 'applied' }, /version/],
    ['an upper-case sha256', { profile: 'p', version: 1, sha256: 'A'.repeat(64), status: 'applied' }, /sha256/],
    ['an unknown status', { profile: 'p', version: 1, status: 'done' }, /status/],
    ['a refusal without an error', { profile: 'p', version: 1, status: 'refused' }, /a refusal needs an error/],
    ['an applied report with an error', { profile: 'p', version: 1, status: 'applied', error: 'x' }, /only a refusal has an error/],
    ['an unknown field', { profile: 'p', version: 1, status: 'applied', values: {} }, /values/],
  ])('refuses %s, saying what is wrong', (_name, body, problem) => {
    const got = parse(body);
    expect(typeof got).toBe('string');
    expect(got).toMatch(problem);
  });
});

describe('the desired payload', () => {
  it('holds the profile, version, sha256 and values, and nothing of the device record', () => {
    const body = JSON.parse(desiredPayload({ profile: 'vib', version: 3, sha256: 'b'.repeat(64), values: { threshold: 4.5 } }).toString()) as unknown;
    expect(body).toEqual({ profile: 'vib', version: 3, sha256: 'b'.repeat(64), values: { threshold: 4.5 } });
  });
});

describe('the MQTT deliverer against a fake link and hub', () => {
  const desired = (name: string, version = 1): DesiredConfig => ({
    deviceId: `mqtt:${name}`,
    protocol: 'mqtt',
    name,
    profile: 'vib',
    version,
    sha256: 'c'.repeat(64),
    values: { t: 1 },
    reapplyOnDrift: false,
  });
  function setup(o: { connected?: boolean; fail?: boolean; hang?: boolean; current?: DesiredConfig[] } = {}) {
    const published: { topic: string; payload: string; options: OutboundOptions }[] = [];
    const reports: [string, DeviceReport][] = [];
    const logged: Record<string, unknown>[] = [];
    let handler: MessageHandler = () => undefined;
    const connectListeners: (() => void)[] = [];
    const link: BrokerLink = {
      subscribe: async (_filters, h) => void (handler = h),
      publish: async (topic, payload, options) => {
        if (o.fail) throw new Error('broker gone');
        if (o.hang) return new Promise<void>(() => undefined);
        published.push({ topic, payload: payload.toString(), options });
      },
      isConnected: () => o.connected ?? true,
      retained: async () => [],
      onConnect: (listener) => void connectListeners.push(listener),
    };
    const hub: ConfigurationHub = {
      register: () => undefined,
      unregister: () => undefined,
      reported: (_p, name, report) => {
        reports.push([name, report]);
        return report.version === 1 ? { accepted: true, status: 'in_sync' } : { accepted: false, reason: 'never sent' };
      },
      current: () => o.current ?? [],
      observed: () => undefined,
    };
    const log = pino({ level: 'debug' }, { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) });
    const config = new MqttConfig({ log, link, hub, topicRoot: 'config', publishTimeoutMs: 1_000 });
    const send = (topic: string, body: string, retain?: boolean) => handler({ topic, payload: Buffer.from(body), ...(retain ? { retain } : {}) });
    const connect = () => {
      o.connected = true;
      for (const l of connectListeners) l();
    };
    const waitFor = async (what: () => boolean) => {
      for (const deadline = Date.now() + 5_000; !what(); await new Promise((r) => setTimeout(r, 5))) if (Date.now() > deadline) throw new Error('timed out');
    };
    return { config, published, reports, logged, send, connect, waitFor, o };
  }

  it('republishes every current desired configuration at start, retained at QoS 1', async () => {
    const t = setup({ current: [desired('a'), desired('b', 3)] });
    await t.config.start();
    expect(t.published.map((p) => [p.topic, p.options])).toEqual([
      ['config/a/desired', { qos: 1, retain: true }],
      ['config/b/desired', { qos: 1, retain: true }],
    ]);
    expect(JSON.parse(t.published[1]!.payload)).toEqual({ profile: 'vib', version: 3, sha256: 'c'.repeat(64), values: { t: 1 } });
  });

  it('republishes when a broker not connected at start connects, and again on every reconnection', async () => {
    const t = setup({ connected: false, current: [desired('a'), desired('b', 3)] });
    await t.config.start();
    expect(t.published).toEqual([]);
    expect(t.logged).toContainEqual(expect.objectContaining({ msg: expect.stringContaining('not republished yet: the MQTT broker is not connected') }));
    t.connect();
    await t.waitFor(() => t.published.length === 2);
    t.connect();
    await t.waitFor(() => t.published.length === 4);
    expect(t.published.map((p) => p.topic)).toEqual(['config/a/desired', 'config/b/desired', 'config/a/desired', 'config/b/desired']);
    expect(t.logged.filter((l) => l.msg === 'desired configurations republished').map((l) => l.why)).toEqual(['reconnected', 'reconnected']);
    t.config.stop();
    t.connect();
    await new Promise((r) => setImmediate(r));
    expect(t.published).toHaveLength(4);
  });

  it('skips in a republish a device delivered since the snapshot was read (its newer message stays retained)', async () => {
    const t = setup({ current: [desired('a', 1)] });
    await t.config.start();
    t.published.length = 0;
    // The hub reads v1, then a delivery of v2 starts before the republish reaches the device.
    const hub = (t.config as unknown as { deps: { hub: ConfigurationHub } }).deps.hub;
    const read = hub.current;
    hub.current = (p) => {
      const snapshot = read(p);
      void t.config.deliver(desired('a', 2), new AbortController().signal);
      return snapshot;
    };
    t.connect();
    await t.waitFor(() => t.logged.some((l) => l.msg === 'desired configurations republished' && l.why === 'reconnected'));
    expect(t.published.map((p) => JSON.parse(p.payload).version)).toEqual([2]);
  });

  it('answers published once the broker took it, failed with retry when it did not or is not connected', async () => {
    const signal = new AbortController().signal;
    expect(await setup().config.deliver(desired('a'), signal)).toEqual({ kind: 'published' });
    expect(await setup({ fail: true }).config.deliver(desired('a'), signal)).toMatchObject({ kind: 'failed', retry: true, reason: /broker gone/ });
    expect(await setup({ connected: false }).config.deliver(desired('a'), signal)).toMatchObject({ kind: 'failed', retry: true });
  });

  it('withdraws with an empty retained payload', async () => {
    const t = setup();
    await t.config.withdraw({ deviceId: 'mqtt:a', name: 'a' });
    expect(t.published).toEqual([{ topic: 'config/a/desired', payload: '', options: { qos: 1, retain: true } }]);
  });

  it('fails a withdrawal at once when the broker is not connected, and when it does not answer within publishTimeoutMs', async () => {
    await expect(setup({ connected: false }).config.withdraw({ deviceId: 'mqtt:a', name: 'a' })).rejects.toThrow(/not connected/);
    const t = setup({ hang: true });
    await t.config.start();
    await expect(t.config.withdraw({ deviceId: 'mqtt:a', name: 'a' })).rejects.toThrow(/no answer from the broker within 1000 ms/);
  });

  it('drops retained reports (old news the broker hands out again), with one log line per device', async () => {
    const t = setup();
    await t.config.start();
    const body = JSON.stringify({ profile: 'vib', version: 1, status: 'applied' });
    t.send('config/a/reported', body, true);
    t.send('config/a/reported', body, true);
    t.send('config/b/reported', body, true);
    expect(t.reports).toEqual([]);
    const lines = t.logged.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('retained configuration report dropped'));
    expect(lines.map((l) => l.device)).toEqual(['a', 'b']);
    t.send('config/a/reported', body);
    expect(t.reports.map(([name]) => name)).toEqual(['a']);
  });

  it('hands a well-formed report to the hub under the id of its topic, and logs a refusal', async () => {
    const t = setup();
    await t.config.start();
    t.send('config/a/reported', JSON.stringify({ profile: 'vib', version: 1, status: 'applied' }));
    t.send('config/a/reported', JSON.stringify({ profile: 'vib', version: 9, status: 'applied' }));
    expect(t.reports.map(([name, r]) => [name, r.version])).toEqual([
      ['a', 1],
      ['a', 9],
    ]);
    expect(t.logged).toContainEqual(expect.objectContaining({ msg: 'configuration report refused', device: 'a', version: 9, reason: 'never sent' }));
  });

  it.each([
    ['bad JSON', 'config/a/reported', '{', 'malformed configuration report dropped'],
    ['a missing status', 'config/a/reported', '{"profile":"vib","version":1}', 'malformed configuration report dropped'],
    ['a topic below the reported one', 'config/a/reported/x', '{}', 'configuration report on an unexpected topic dropped'],
  ])('drops %s with a log line, never throwing, and tells the hub nothing', async (_name, topic, body, msg) => {
    const t = setup();
    await t.config.start();
    expect(() => t.send(topic, body)).not.toThrow();
    expect(t.reports).toEqual([]);
    expect(t.logged).toContainEqual(expect.objectContaining({ msg }));
    if (topic === 'config/a/reported') expect(t.logged.find((l) => l.msg === msg)).toMatchObject({ device: 'a' });
  });
});
