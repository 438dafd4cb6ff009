import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiUser } from '../helpers/apiUser.js';
import { Daemon, tempDir, writeConfig } from '../helpers/daemon.js';
import { deviceRequest, PREFIX, readPem, requestOnce, type Answer } from '../helpers/enrollment.js';
import { freePort } from '../helpers/mosquitto.js';
import { receiverPki, startReceiver, type Receiver } from '../helpers/receiver.js';

const GATEWAY = 'gw-events';
/**
 * The fallback intervals of this daemon: the action worker (mqtt.actionPollMs, its largest value) and the sync
 * (sync.idleMs). Each fallback look comes at least this long after the daemon was spawned, so an answer before
 * then can only come from an event. Not a speed check: the times are printed, the bound is the interval.
 */
const INTERVAL_MS = 60_000;

describe('events inside the daemon: no waiting for a poll interval (embedded broker, reference receiver)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let receiver: Receiver;
  let daemon: Daemon;
  let spawnedAt: number;
  let base: string;
  let config: string;
  let cafile: string;
  let ports: { provisioning: number; mtls: number };
  let technician: string;
  let request: Record<string, unknown>;

  const api = async <T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${technician}`, 'content-type': 'application/json' },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as T };
  };
  /** Waits for `check` until the first fallback look could have come; the caller asserts on what it returns. */
  const beforeFallback = async <T>(check: () => T | undefined | Promise<T | undefined>): Promise<T | undefined> => {
    for (;;) {
      const found = await check();
      if (found !== undefined || Date.now() >= spawnedAt + INTERVAL_MS) return found;
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  beforeAll(async () => {
    tmp = tempDir();
    // What does not need the daemon is made before it starts: the bound counts from its spawn.
    const pki = await receiverPki(tmp.dir);
    writeFileSync(join(tmp.dir, 'token'), 'cmms-token-1\n', { mode: 0o600 });
    receiver = await startReceiver({ db: join(tmp.dir, 'cmms.db'), cert: pki.cert, key: pki.key, args: ['--token-file', join(tmp.dir, 'token')] });
    request = await deviceRequest(tmp.dir, 'ev-1');
    ports = { provisioning: await freePort(), mtls: await freePort() };
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        `  id: ${GATEWAY}`,
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        `  actionPollMs: ${INTERVAL_MS}`,
        '  policy:',
        '    rules: []',
        '    default: hold',
        'opcua:',
        '  enabled: false',
        'sync:',
        '  enabled: true',
        `  baseUrl: https://127.0.0.1:${receiver.port}`,
        `  caFile: ${pki.ca}`,
        `  tokenFile: ${join(tmp.dir, 'token')}`,
        `  idleMs: ${INTERVAL_MS}`,
        '  reconcileOnStart: false',
        '',
      ].join('\n'),
    );
    cafile = join(tmp.dir, 'ca.pem');
    spawnedAt = Date.now();
    daemon = Daemon.start(config, { env: { EDGE_AGENT_MQTT_PROVISIONING_PORT: String(ports.provisioning), EDGE_AGENT_MQTT_MTLS_PORT: String(ports.mtls) } });
    base = await daemon.ready();
    writeFileSync(cafile, await (await fetch(`${base}/ca/chain`)).text());
    technician = await apiUser(config, 'tech-ev', 'technician');
  }, 120_000);
  afterAll(async () => {
    await daemon?.dispose();
    await receiver?.stop();
    tmp?.cleanup();
  });

  it("a technician's approval through the API reaches the waiting device at once, not at the action worker's next poll", async () => {
    const held = await requestOnce(ports.provisioning, cafile, 'ev-1', request, { v5: false });
    expect(held.answer, held.output).toMatchObject({ requestId: 'ev-1-r1', status: 'pending' });
    const device = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.provisioning}`, { clientId: 'ev-1', ca: readPem(cafile), reconnectPeriod: 0 });
    try {
      let answer: Answer | undefined;
      device.on('message', (_t, p) => (answer = JSON.parse(p.toString()) as Answer));
      await device.subscribeAsync(`${PREFIX}/ev-1/response`, { qos: 1 });

      const t0 = Date.now();
      const approved = await api<{ action: { outcome?: string } }>('POST', '/api/v1/devices/mqtt:ev-1/approve', { reason: 'checked on site' });
      const answered = Date.now() - t0;
      const got = await beforeFallback(() => answer);
      const arrived = Date.now();
      process.stdout.write(
        `approve -> certificate at the device: ${arrived - t0} ms (the API answered in ${answered} ms; ` +
          `action worker's fallback poll every ${INTERVAL_MS} ms, none before ${spawnedAt + INTERVAL_MS - t0} ms after the approval)\n`,
      );
      expect(got, 'the certificate came before the first fallback poll').toMatchObject({ requestId: 'ev-1-r1', status: 'issued' });
      expect(arrived - spawnedAt).toBeLessThan(INTERVAL_MS);
      // The route's wait ended on action.done: 200 with the outcome (202 would mean it gave up waiting).
      expect(approved.status).toBe(200);
      expect(approved.body.action.outcome).toBe('issued');
    } finally {
      await device.endAsync();
    }
  });

  it('a change through the API reaches the receiver at once, not at the sync fallback poll', async () => {
    const t0 = Date.now();
    const set = await api<{ device: { id: string; revision: number } }>('PUT', '/api/v1/devices/mqtt:ev-1/annotation', {
      assetTag: 'P-7',
      location: { site: 'plant-1' },
    });
    expect(set.status).toBe(200);
    const { id, revision } = set.body.device;
    const held = await beforeFallback(() => {
      const at = receiver.holdings(GATEWAY).get(id);
      return at !== undefined && at >= revision ? at : undefined;
    });
    const arrived = Date.now();
    process.stdout.write(
      `annotation -> receiver: ${arrived - t0} ms ` +
        `(sync fallback poll every ${INTERVAL_MS} ms, none before ${spawnedAt + INTERVAL_MS - t0} ms after the change)\n`,
    );
    expect(held, `the receiver holds revision ${revision} of ${id} before the first fallback poll`).toBe(revision);
    expect(arrived - spawnedAt).toBeLessThan(INTERVAL_MS);
  });
});
