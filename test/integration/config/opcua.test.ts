import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiUser } from '../../helpers/apiUser.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { startOpcuaServer, type OpcuaServerHandle } from '../../helpers/opcuaServer.js';

const ADMIN = { username: 'secadmin', password: 'Config-2-secret' };
/** The shortest the schema allows: drift is looked for every 10 s. */
const DRIFT_CHECK_SECONDS = 10;

interface Configuration {
  profile: string | null;
  version: number | null;
  status: string;
  error: string | null;
  checkedAt: string | null;
}

/**
 * Configuration of an OPC UA server end to end: a real node-opcua 2.157
 * server with configuration variables, provisioned by the push (the agent's
 * certificate trusted once, as commissioning does), then profiles applied
 * through the API: written, read back, in sync; changed behind the agent's
 * back and found drifted; written again where the profile says so; and the
 * profiles the server cannot take, refused with nothing written.
 */
describe('OPC UA configuration delivery (profiles written to a provisioned server)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let base: string;
  let token: string;
  let press: OpcuaServerHandle;
  let id: string;
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const call = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await r.text();
    return { status: r.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  const configuration = async () => (await call('GET', `/api/v1/devices/${encodeURIComponent(id)}`)).body.configuration as Configuration;
  async function until<T>(what: string, find: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = await find();
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; configuration: ${JSON.stringify(await configuration())}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  /** The device's configuration once it is `status` for `profile`. */
  const reaches = (profile: string, status: string) =>
    until(`${profile} ${status}`, async () => {
      const c = await configuration();
      return c.profile === profile && c.status === status ? c : undefined;
    });
  const metric = async (status: string) => {
    const text = await (await fetch(`${base}/metrics`)).text();
    return Number(new RegExp(`^edge_agent_device_config\\{status="${status}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  };
  const node = (nodeId: string, dataType: string) => ({ nodeId: press.config!.nodeId(nodeId), dataType });
  /** A profile of the six writable variables; `change` alters it. Values other than the fixture's initial ones, so a write shows. */
  const profile = (name: string, extra: { reapplyOnDrift?: boolean; values?: Record<string, unknown>; nodes?: Record<string, unknown> } = {}) => ({
    name,
    protocol: 'opcua',
    schema: {
      intervalMs: { type: 'number', minimum: 10 },
      gain: { type: 'number' },
      threshold: { type: 'integer' },
      channel: { type: 'integer' },
      enabled: { type: 'boolean' },
      label: { type: 'string' },
      ...(extra.values && 'firmware' in extra.values ? { firmware: { type: 'string' } } : {}),
    },
    values: { intervalMs: 250.5, gain: 0.1, threshold: -42, channel: 3, enabled: true, label: name, ...extra.values },
    nodes: {
      intervalMs: node('Config.SamplingIntervalMs', 'Double'),
      gain: node('Config.Gain', 'Float'),
      threshold: node('Config.AlarmThreshold', 'Int32'),
      channel: node('Config.Channel', 'UInt16'),
      enabled: node('Config.Enabled', 'Boolean'),
      label: node('Config.Label', 'String'),
      ...extra.nodes,
    },
    ...(extra.reapplyOnDrift !== undefined ? { reapplyOnDrift: extra.reapplyOnDrift } : {}),
  });
  const apply = async (doc: Record<string, unknown>) => {
    const stored = await call('POST', '/api/v1/config-profiles', doc);
    expect(stored.status, JSON.stringify(stored.body)).toBe(201);
    const assigned = await call('PUT', `/api/v1/devices/${encodeURIComponent(id)}/config-profile`, { profile: doc.name });
    expect(assigned.status, JSON.stringify(assigned.body)).toBe(200);
  };
  const ids = ['Config.SamplingIntervalMs', 'Config.Gain', 'Config.AlarmThreshold', 'Config.Channel', 'Config.Enabled', 'Config.Label'];
  const server = () => Object.fromEntries(ids.map((n) => [n, press.config!.value(n)]));
  const writes = () => ids.reduce((n, v) => n + press.config!.writes(v), 0);

  beforeAll(async () => {
    tmp = tempDir();
    press = await startOpcuaServer({
      host: '127.0.0.2',
      applicationUri: 'urn:plant7:press-7',
      applicationName: 'Press 7',
      securityModes: 'secure',
      acceptUnknownClientCertificates: false,
      pushManagement: { securityAdmin: ADMIN },
      configNodes: true,
    });
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-config-opcua',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'ca:',
        '  rootKeyType: rsa-2048',
        'opcua:',
        `  endpoints: [${press.endpointUrl}]`,
        '  timeoutMs: 8000',
        '  push:',
        "    approve: [{ applicationUri: 'urn:plant7:*' }]",
        `    securityAdmins: [{ applicationUri: 'urn:plant7:*', username: ${ADMIN.username}, password: ${ADMIN.password} }]`,
        '    stepTimeoutMs: 10000',
        '    applyWaitMs: 20000',
        'configuration:',
        `  opcuaDriftCheckSeconds: ${DRIFT_CHECK_SECONDS}`,
        '  retryInitialMs: 1000',
        '  retryMaxMs: 5000',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    base = await daemon.ready();
    token = await apiUser(config, 'plant-admin', 'admin');
    // Commissioning, once: the server trusts the agent's client certificate, our CAs and their CRLs.
    const made = await cli('opcua', 'client-bundle', '--out', join(tmp.dir, 'bundle'));
    expect(made.code, made.stderr).toBe(0);
    const read = (sub: string) => readdirSync(join(tmp.dir, 'bundle', sub)).map((f) => readFileSync(join(tmp.dir, 'bundle', sub, f)));
    await press.trustCaIssuedClient({ certificate: read('trusted/certs')[0]!, issuers: read('issuers/certs'), crls: read('issuers/crl') });
    const run = await cli('opcua', 'discover', '--json');
    expect(run.code, run.stderr).toBe(0);
    const listed = (await call('GET', '/api/v1/devices?protocol=opcua')).body.items as { id: string; source: { opcua?: { applicationUri: string } } }[];
    id = listed.find((d) => d.source.opcua?.applicationUri === press.applicationUri)!.id;
    await until('the push to provision the server', async () => {
      const d = (await call('GET', `/api/v1/devices/${encodeURIComponent(id)}`)).body as { device: { state: string } };
      return d.device.state === 'provisioned' ? true : undefined;
    });
  }, 180_000);

  afterAll(async () => {
    await daemon?.dispose();
    await press?.stop();
    tmp?.cleanup();
  });

  it('writes a profile, reads it back and reports the server in sync (API and /metrics)', async () => {
    await apply(profile('press-sampling', { reapplyOnDrift: false }));
    const c = await reaches('press-sampling', 'in_sync');
    expect(c).toMatchObject({ version: 1, error: null });
    expect(server()).toEqual({
      'Config.SamplingIntervalMs': 250.5,
      'Config.Gain': Math.fround(0.1),
      'Config.AlarmThreshold': -42,
      'Config.Channel': 3,
      'Config.Enabled': true,
      'Config.Label': 'press-sampling',
    });
    expect(await metric('in_sync')).toBe(1);
  });

  it('finds a value changed on the server behind its back at the next drift check, and leaves it (reapplyOnDrift false)', async () => {
    const before = writes();
    press.config!.setValue('Config.AlarmThreshold', 7);
    const c = await reaches('press-sampling', 'drifted');
    expect(c.error).toContain('threshold: expected -42, read 7');
    expect(await metric('drifted')).toBe(1);
    // Not written again: the profile does not say so.
    await until('a later drift check', async () => ((await configuration()).checkedAt !== c.checkedAt ? true : undefined));
    expect((await configuration()).status).toBe('drifted');
    expect(press.config!.value('Config.AlarmThreshold')).toBe(7);
    expect(writes()).toBe(before);
  });

  it('writes the values again when the profile says reapplyOnDrift, and is in sync after', async () => {
    await apply(profile('press-self-healing', { reapplyOnDrift: true }));
    await reaches('press-self-healing', 'in_sync');
    const before = press.config!.writes('Config.Channel');
    press.config!.setValue('Config.Channel', 9);
    // Back to 3 only by the agent's write, after a check found 9.
    await until('the channel written again', async () => (press.config!.value('Config.Channel') === 3 ? true : undefined));
    expect(press.config!.writes('Config.Channel')).toBe(before + 1);
    await reaches('press-self-healing', 'in_sync');
  });

  // Functions: the fixture's NodeIds are known once it runs.
  const refusals: { name: string; extra: () => Parameters<typeof profile>[1]; reason: RegExp }[] = [
    {
      name: 'a NodeId that does not exist',
      extra: () => ({ nodes: { gain: { nodeId: 'ns=1;s=Config.NoSuchNode', dataType: 'Float' } } }),
      reason: /gain \(ns=1;s=Config\.NoSuchNode\): no such node \(BadNodeIdUnknown\)/,
    },
    {
      name: 'a wrong data type',
      extra: () => ({ nodes: { threshold: node('Config.AlarmThreshold', 'Double') } }),
      reason: /threshold \(ns=\d+;s=Config\.AlarmThreshold\): its data type is Int32, the profile binds Double/,
    },
    {
      name: 'a read-only node',
      extra: () => ({ values: { firmware: '9.9.9' }, nodes: { firmware: node('Config.FirmwareVersion', 'String') } }),
      reason: /firmware \(ns=\d+;s=Config\.FirmwareVersion\): read-only/,
    },
  ];
  for (const [i, { name, extra, reason }] of refusals.entries()) {
    it(`refuses a profile with ${name}: failed with the reason, no value written`, async () => {
      const values = server();
      const before = writes();
      const doc = profile(`press-refused-${i + 1}`, extra());
      // Values the server does not hold: any write would show.
      Object.assign(doc.values, { intervalMs: 999, label: 'never written' });
      await apply(doc);
      const c = await reaches(doc.name, 'failed');
      expect(c.error).toMatch(reason);
      expect(c.error).toMatch(/^configuration refused, nothing written: /);
      expect(server()).toEqual(values);
      expect(writes()).toBe(before);
      expect(await metric('failed')).toBe(1);
    });
  }
});
