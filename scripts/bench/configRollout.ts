import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { App } from '../../agent/app.js';
import { loadConfig } from '../../agent/config/load.js';
import { SystemdNotifier } from '../../agent/lifecycle/sdNotify.js';
import { LogHub } from '../../agent/log.js';
import { loadAuthority } from '../../agent/ca/loadCa.js';
import { resolvePassphrase } from '../../agent/ca/passphrase.js';
import type { Config } from '../../agent/config/schema.js';
import { Store } from '../../agent/store/database.js';
import { openRepositories } from '../../agent/store/repositories.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { prepare } from '../../certs/request.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import pino from 'pino';
import { freePort } from '../lib/local.js';
import { ConfiguredDevice, type ConfigEvent } from '../simulate/configDevice.js';
import { deviceId } from '../simulate/mqttDevices.js';
import type { BenchResult } from './result.js';

const DEVICES = 1_000;
const fmt = (v: number) => Math.round(v).toLocaleString('en-US');

/** Resolves once `done()` holds, checking on every event and every 20 ms; rejects after `ms`. */
async function until(done: () => boolean, ms: number, what: () => string): Promise<number> {
  const started = performance.now();
  while (!done()) {
    if (performance.now() - started > ms) throw new Error(`timed out: ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return performance.now() - started;
}

/**
 * A configuration rollout to 1,000 simulated MQTT devices through the
 * embedded broker: the time from the profile's apply (through the API) to
 * every device reported in_sync, next to the time to publish the same
 * 1,000 retained messages raw through the same broker and have them
 * received by the same devices, in the same run. The agent runs in this
 * process (the raw messages go through its broker's own publish), the
 * devices too (configDevice.ts, connected over mutual TLS); both figures
 * share that one event loop. The devices are provisioned directly (CA and
 * inventory) rather than enrolled, which the enroll bench measures, to keep
 * the run short.
 */
export async function configRolloutBench(): Promise<BenchResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-config-'));
  const file = join(dir, 'agent.yaml');
  const ports = { http: await freePort(), provisioning: await freePort(), mtls: await freePort() };
  writeFileSync(
    file,
    [
      'agent:',
      '  id: gw-bench-config',
      `  dataDir: ${join(dir, 'data')}`,
      'log:',
      '  level: error',
      'http:',
      `  port: ${ports.http}`,
      'mqtt:',
      `  provisioningPort: ${ports.provisioning}`,
      `  mtlsPort: ${ports.mtls}`,
      '',
    ].join('\n'),
  );
  const load = () => loadConfig({ file, env: {} });
  const logs = new LogHub({ level: 'error', pretty: false });
  const newApp = () => new App({ loaded: load(), logs, notifier: new SystemdNotifier({ log: logs.child('systemd'), env: {} }), reread: load });
  const events = { received: new Set<string>(), applied: new Set<string>(), appliedTotal: 0 };
  const devices: ConfiguredDevice[] = [];
  let app: App | undefined;
  try {
    // A first start makes the CA and the database; the devices are then provisioned beside it (their enrollment is the enroll bench's).
    app = newApp();
    await app.start(new AbortController().signal);
    const base = `http://127.0.0.1:${ports.http}`;
    const chain = await fetch(`${base}/ca/chain`);
    if (!chain.ok) throw new Error(`GET /ca/chain: HTTP ${chain.status}`);
    const ca = await chain.text();
    await app.stop('provisioning the bench devices');
    const identities = await provision(load().config, DEVICES);
    app = newApp();
    await app.start(new AbortController().signal);
    const broker = app.mqttService!.running.embedded!;
    const token = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
    const onEvent = (e: ConfigEvent) => {
      if (e.kind === 'malformed') events.received.add(e.id);
      if (e.kind === 'applied') {
        events.applied.add(e.id);
        events.appliedTotal++;
      }
    };
    // In batches: a thousand TLS handshakes at once on a busy machine run into the connect timeout and start over.
    for (let i = 0; i < identities.length; i += 50) {
      const batch = identities
        .slice(i, i + 50)
        .map((d) => new ConfiguredDevice(d.id, { url: `mqtts://127.0.0.1:${ports.mtls}`, key: d.key, cert: d.cert, ca }, { onEvent, refusing: false }));
      devices.push(...batch);
      await Promise.all(batch.map((d) => d.ready));
    }
    const values = { alertThreshold: 4.5, sampleRateHz: 200, mode: 'peak' };

    // Raw: the same size and topic as a desired configuration, but not one the devices apply (no profile): received, not reported.
    const raw = Buffer.from(JSON.stringify({ raw: 'bench', version: 1, sha256: '0'.repeat(64), values }));
    const rawStarted = performance.now();
    await Promise.all(identities.map(({ id }) => broker.publish(`config/${id}/desired`, raw, { qos: 1, retain: true })));
    await until(
      () => events.received.size === DEVICES,
      60_000,
      () => `${events.received.size} of ${DEVICES} raw messages received`,
    );
    const rawMs = performance.now() - rawStarted;
    await Promise.all(identities.map(({ id }) => broker.publish(`config/${id}/desired`, Buffer.alloc(0), { qos: 1, retain: true })));

    const registry = app.metrics.registry;
    let synced = 0;
    const rolloutStarted = performance.now();
    await applyProfile(base, token, values);
    await until(
      () => {
        void registry
          .getSingleMetric('edge_agent_device_config')
          ?.get()
          .then((m) => (synced = m.values.find((v) => v.labels.status === 'in_sync')?.value ?? 0));
        return synced === DEVICES;
      },
      60_000,
      () => `${synced} of ${DEVICES} in_sync, ${events.applied.size} applied`,
    );
    const rolloutMs = performance.now() - rolloutStarted;
    return [
      {
        name: `config: rollout to ${fmt(DEVICES)} MQTT devices (embedded broker), apply to all in_sync`,
        value: rolloutMs,
        unit: 'ms',
        limit:
          `raw: the same ${fmt(DEVICES)} retained messages through the same broker to the same devices, ` +
          `${fmt(rawMs)} ms in the same run; ${fmt(events.appliedTotal)} applications`,
      },
    ];
  } finally {
    await Promise.all(devices.map((d) => d.stop()));
    await app?.stop('bench done').catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * `count` devices as enrollment leaves them, written while the agent is
 * stopped: a certificate from the gateway CA each (recorded, so the broker
 * lets it in) and a provisioned device in the inventory.
 */
async function provision(config: Config, count: number): Promise<{ id: string; key: string; cert: string }[]> {
  const { store } = Store.open(config.store, pino({ level: 'silent' }));
  try {
    const repos = openRepositories(store);
    const authority = loadAuthority(config.ca, repos.certificates, resolvePassphrase(config.ca, {}));
    const out: { id: string; key: string; cert: string }[] = [];
    for (let i = 0; i < count; i++) {
      const id = deviceId('cfg-', i);
      const key = SoftwareKey.generate('ec-p256');
      const issued = await authority.issue({ profile: 'mqtt-device', identity: id, csr: prepare(buildCsr(key, encodeName({ commonName: id }))) });
      out.push({ id, key: key.exportable().export({ format: 'pem', type: 'pkcs8' }) as string, cert: issued.record.pem + issued.chain.slice(0, -1).join('') });
    }
    store.transaction(() => {
      for (const { id } of out) {
        const nameplate = { manufacturer: 'Simulated Devices Inc.', model: 'SIM-1', serialNumber: id };
        repos.devices.apply({ protocol: 'mqtt', name: id, to: 'provisioned', cause: 'seeded', actor: 'bench', patch: { nameplate } });
      }
    });
    return out;
  } finally {
    store.close();
  }
}

/** Applies the benchmark's profile through the API, as `edge-agent config-profiles apply` does. */
async function applyProfile(base: string, token: string, values: Record<string, unknown>): Promise<void> {
  const doc = {
    name: 'bench-vib',
    protocol: 'mqtt',
    selector: { model: 'SIM-1' },
    schema: { alertThreshold: { type: 'number' }, sampleRateHz: { type: 'integer' }, mode: { type: 'string' } },
    values,
  };
  const res = await fetch(`${base}/api/v1/config-profiles`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(doc),
  });
  if (!res.ok) throw new Error(`profile apply: HTTP ${res.status} ${await res.text()}`);
}
