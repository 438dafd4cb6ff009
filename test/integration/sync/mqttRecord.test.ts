import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { deviceRequest, NAMEPLATE, PREFIX, requestOnce, saveIssued } from '../../helpers/enrollment.js';
import { freePort } from '../../helpers/mosquitto.js';
import { openssl } from '../../helpers/openssl.js';
import { receiverPki, startReceiver, type Receiver } from '../../helpers/receiver.js';

const GATEWAY = 'gw-mqtt-record';

describe('the upstream record of a device enrolled over MQTT (real daemon, embedded broker, mosquitto_rr, reference receiver)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let receiver: Receiver;
  let daemon: Daemon;
  let config: string;

  beforeAll(async () => {
    tmp = tempDir();
    const pki = await receiverPki(tmp.dir);
    writeFileSync(join(tmp.dir, 'token'), 'cmms-token\n', { mode: 0o600 });
    receiver = await startReceiver({ db: join(tmp.dir, 'cmms.db'), cert: pki.cert, key: pki.key, base: ['--token-file', join(tmp.dir, 'token')] });
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        `  id: ${GATEWAY}`,
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'opcua:',
        '  enabled: false',
        'mqtt:',
        '  policy:',
        '    rules:',
        '      - { kind: token, action: approve }',
        '    default: hold',
        'sync:',
        '  enabled: true',
        `  baseUrl: https://127.0.0.1:${receiver.port}`,
        `  caFile: ${pki.ca}`,
        `  tokenFile: ${join(tmp.dir, 'token')}`,
        '  idleMs: 100',
        '  retryInitialMs: 100',
        '  retryMaxMs: 1000',
        '  location: { site: plant-1, area: packaging, line: "", cell: "" }',
        '',
      ].join('\n'),
    );
  }, 180_000);

  afterAll(async () => {
    await daemon?.dispose();
    await receiver?.stop();
    tmp?.cleanup();
  });

  it('holds, field by field, what the enrollment recorded: nameplate, MQTT request topic, certificate, state, times', async () => {
    const ports = { provisioning: await freePort(), mtls: await freePort() };
    daemon = Daemon.start(config, { env: { EDGE_AGENT_MQTT_PROVISIONING_PORT: String(ports.provisioning), EDGE_AGENT_MQTT_MTLS_PORT: String(ports.mtls) } });
    const base = await daemon.ready();
    const cafile = join(tmp.dir, 'ca.pem');
    writeFileSync(cafile, await (await fetch(`${base}/ca/chain`)).text());
    const made = await runCli(['devices', 'token', 'create', '--uses', '1', '--expires', '1h', '--json', '--config', config]);
    expect(made.code, made.stderr).toBe(0);
    const request = await deviceRequest(tmp.dir, 'meter-7', { enrollmentToken: (JSON.parse(made.stdout) as { token: string }).token });
    const enrolled = await requestOnce(ports.provisioning, cafile, 'meter-7', request, { v5: false });
    expect(enrolled.answer?.status, enrolled.output).toBe('issued');
    const { cert } = saveIssued(tmp.dir, 'meter-7', enrolled.answer!);

    // The agent's record of the device once the receiver holds its latest revision.
    const show = async () => {
      const r = await runCli(['devices', 'show', 'meter-7', '--json', '--config', config]);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { device: { revision: number; state: string; firstSeen: string; lastSeen: string; online: boolean; updatedAt: string } })
        .device;
    };
    let device = await show();
    let held: { revision: number; op: string; observed_at: string; record: string } | undefined;
    for (const deadline = Date.now() + 30_000; ; ) {
      device = await show();
      const db = new Database(receiver.db, { readonly: true });
      held = db
        .prepare('SELECT revision, op, observed_at, record FROM devices WHERE gateway_id = ? AND device_id = ?')
        .get(GATEWAY, 'mqtt:meter-7') as typeof held;
      db.close();
      if (device.state === 'provisioned' && held?.revision === device.revision) break;
      if (Date.now() > deadline) throw new Error(`the receiver holds ${JSON.stringify(held)}, the agent ${JSON.stringify(device)}`);
      await new Promise((r) => setTimeout(r, 200));
    }

    // The certificate as openssl reads it, not as the agent says.
    const x509 = async (...args: string[]) => {
      const r = await openssl(['x509', '-in', cert, '-noout', ...args], tmp.dir);
      expect(r.ok, r.stderr).toBe(true);
      return r.stdout.trim().split('=').slice(1).join('=');
    };
    const serial = (await x509('-serial')).toLowerCase().replace(/^0+/, '');
    const thumbprint = (await x509('-fingerprint', '-sha256')).replace(/:/g, '').toLowerCase();
    const notAfter = new Date(await x509('-enddate')).toISOString();

    expect(held!.op).toBe('upsert');
    expect(held!.observed_at).toBe(device.updatedAt);
    expect(JSON.parse(held!.record)).toEqual({
      deviceId: 'mqtt:meter-7',
      assetTag: null,
      manufacturer: { name: NAMEPLATE.manufacturer, uri: null },
      model: NAMEPLATE.model,
      productCode: null,
      serialNumber: 'SN-meter-7',
      productInstanceUri: null,
      hardwareRevision: null,
      firmwareVersion: null,
      softwareVersion: null,
      deviceClass: 'mqtt-device',
      displayName: null,
      location: { site: 'plant-1', area: 'packaging' },
      source: { protocol: 'mqtt', endpoint: null, applicationUri: null, topics: [`${PREFIX}/meter-7/request`] },
      certificate: { status: 'valid', serial, thumbprint, notAfter },
      configuration: null,
      lifecycleState: 'provisioned',
      firstSeen: device.firstSeen,
      lastSeen: device.lastSeen,
      online: device.online,
    });
  }, 180_000);
});
