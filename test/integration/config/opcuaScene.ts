import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { apiUser } from '../../helpers/apiUser.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { startOpcuaServer } from '../../helpers/opcuaServer.js';

const ADMIN = { username: 'secadmin', password: 'Config-2-secret' };

/** A device's configuration as GET /api/v1/devices/{id} shows it. */
export interface Configuration {
  profile: string | null;
  version: number | null;
  status: string;
  error: string | null;
  checkedAt: string | null;
}

/** The fixture's six writable configuration variables. */
export const CONFIG_IDS = ['Config.SamplingIntervalMs', 'Config.Gain', 'Config.AlarmThreshold', 'Config.Channel', 'Config.Enabled', 'Config.Label'];

export type OpcuaScene = Awaited<ReturnType<typeof opcuaScene>>;

/**
 * A daemon and a real node-opcua 2.157 server with configuration variables
 * (on `host`), provisioned by the push: the agent's certificate trusted
 * once, as commissioning does, a discovery run, an approval rule, and the
 * push run to its end. Then what the tests use: the API as an admin,
 * profiles of the server's variables, waits with deadlines.
 */
export async function opcuaScene(options: { host: string; plant: string; driftCheckSeconds: number }) {
  const tmp = tempDir();
  const press = await startOpcuaServer({
    host: options.host,
    applicationUri: `urn:${options.plant}:press-7`,
    applicationName: 'Press 7',
    securityModes: 'secure',
    acceptUnknownClientCertificates: false,
    pushManagement: { securityAdmin: ADMIN },
    configNodes: true,
  });
  const config = writeConfig(
    tmp.dir,
    [
      'agent:',
      `  id: gw-${options.plant}`,
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
      `    approve: [{ applicationUri: 'urn:${options.plant}:*' }]`,
      `    securityAdmins: [{ applicationUri: 'urn:${options.plant}:*', username: ${ADMIN.username}, password: ${ADMIN.password} }]`,
      '    stepTimeoutMs: 10000',
      '    applyWaitMs: 20000',
      'configuration:',
      `  opcuaDriftCheckSeconds: ${options.driftCheckSeconds}`,
      '  retryInitialMs: 1000',
      '  retryMaxMs: 5000',
      '',
    ].join('\n'),
  );
  const daemon = Daemon.start(config);
  const base = await daemon.ready();
  const token = await apiUser(config, 'plant-admin', 'admin');
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
  const discover = async () => {
    const run = await cli('opcua', 'discover', '--json');
    expect(run.code, run.stderr).toBe(0);
  };
  const made = await cli('opcua', 'client-bundle', '--out', join(tmp.dir, 'bundle'));
  expect(made.code, made.stderr).toBe(0);
  const read = (sub: string) => readdirSync(join(tmp.dir, 'bundle', sub)).map((f) => readFileSync(join(tmp.dir, 'bundle', sub, f)));
  await press.trustCaIssuedClient({ certificate: read('trusted/certs')[0]!, issuers: read('issuers/certs'), crls: read('issuers/crl') });
  await discover();
  const listed = (await call('GET', '/api/v1/devices?protocol=opcua')).body.items as { id: string; source: { opcua?: { applicationUri: string } } }[];
  const id = listed.find((d) => d.source.opcua?.applicationUri === press.applicationUri)!.id;
  const device = async () => (await call('GET', `/api/v1/devices/${encodeURIComponent(id)}`)).body as { device: { state: string; online: boolean } };
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
  await until('the push to provision the server', async () => ((await device()).device.state === 'provisioned' ? true : undefined));

  const node = (nodeId: string, dataType: string) => ({ nodeId: press.config!.nodeId(nodeId), dataType });
  return {
    press,
    id,
    base,
    call,
    discover,
    device,
    configuration,
    until,
    node,
    /** The device's configuration once it is `status` for `profile`. */
    reaches: (profile: string, status: string) =>
      until(`${profile} ${status}`, async () => {
        const c = await configuration();
        return c.profile === profile && c.status === status ? c : undefined;
      }),
    metric: async (status: string) => {
      const text = await (await fetch(`${base}/metrics`)).text();
      return Number(new RegExp(`^edge_agent_device_config\\{status="${status}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
    },
    /** A profile of the six writable variables, values other than the fixture's initial ones (so a write shows); `extra` adds to it. */
    profile: (name: string, extra: { reapplyOnDrift?: boolean; values?: Record<string, unknown>; nodes?: Record<string, unknown> } = {}) => ({
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
    }),
    /** Stores a profile through the API and pins the server to it. */
    apply: async (doc: { name: string }) => {
      const stored = await call('POST', '/api/v1/config-profiles', doc);
      expect(stored.status, JSON.stringify(stored.body)).toBe(201);
      const assigned = await call('PUT', `/api/v1/devices/${encodeURIComponent(id)}/config-profile`, { profile: doc.name });
      expect(assigned.status, JSON.stringify(assigned.body)).toBe(200);
    },
    /** The values the server holds, by variable. */
    server: () => Object.fromEntries(CONFIG_IDS.map((n) => [n, press.config!.value(n)])),
    /** Client writes the server has taken, all variables together. */
    writes: () => CONFIG_IDS.reduce((n, v) => n + press.config!.writes(v), 0),
    async dispose() {
      await daemon.dispose();
      await press.stop();
      tmp.cleanup();
    },
  };
}
