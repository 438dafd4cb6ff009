import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { deviceRequest, readPem, requestOnce, saveIssued } from '../../helpers/enrollment.js';
import { freePort } from '../../helpers/mosquitto.js';
import { opensslCsr } from '../../helpers/openssl.js';

interface FindingJson {
  kind: string;
  subject: string;
  deviceId: string | null;
  evidence: Record<string, unknown>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the device report: identities in conflict, revoked devices and strangers on the embedded broker (real daemon)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let ports: { provisioning: number; mtls: number };
  let cafile: string;
  let last: FindingJson[] = [];
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  /** Polls the report (through the CLI) until a finding of `kind` and `subject` is in it. */
  async function awaitFinding(kind: string, subject: string, timeoutMs = 60_000): Promise<FindingJson> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await cli('report', '--json', '--kind', kind);
      expect(r.code, r.stderr).toBe(0);
      last = (JSON.parse(r.stdout) as { findings: FindingJson[] }).findings;
      const found = last.find((f) => f.subject === subject);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${kind} ${subject}; last: ${JSON.stringify(last)}`);
      await sleep(300);
    }
  }
  async function provision(name: string): Promise<void> {
    const made = await cli('devices', 'token', 'create', '--json');
    expect(made.code, made.stderr).toBe(0);
    const { token } = JSON.parse(made.stdout) as { token: string };
    const r = await requestOnce(ports.provisioning, cafile, name, await deviceRequest(tmp.dir, name, { enrollmentToken: token }), { v5: false });
    expect(r.answer?.status, r.output).toBe('issued');
    saveIssued(tmp.dir, name, r.answer!);
  }

  beforeAll(async () => {
    tmp = tempDir();
    ports = { provisioning: await freePort(), mtls: await freePort() };
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-shadow',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'opcua:',
        '  enabled: false',
        'mqtt:',
        '  actionPollMs: 100',
        '  policy:',
        '    rules:',
        '      - { kind: token, action: approve }',
        '    default: hold',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config, { env: { EDGE_AGENT_MQTT_PROVISIONING_PORT: String(ports.provisioning), EDGE_AGENT_MQTT_MTLS_PORT: String(ports.mtls) } });
    const base = await daemon.ready();
    cafile = join(tmp.dir, 'ca.pem');
    writeFileSync(cafile, await (await fetch(`${base}/ca/chain`)).text());
    await provision('meter-a');
    await provision('meter-b');
  }, 120_000);
  afterAll(async () => {
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('reports an enrollment request for a provisioned id with another key, held for a technician, as an identity conflict', async () => {
    const csr = await opensslCsr(tmp.dir, 'meter-a-impostor', 'ec-p256', { subject: '/CN=meter-a' });
    const r = await requestOnce(
      ports.provisioning,
      cafile,
      'meter-a',
      { requestId: 'meter-a-x1', csr, nameplate: { manufacturer: 'X', model: 'Y', serialNumber: '1' } },
      { v5: false },
    );
    expect(r.answer?.status, r.output).toBe('pending');
    const conflict = await awaitFinding('shadow.identity_conflict', 'mqtt:meter-a');
    expect(conflict).toMatchObject({ deviceId: 'mqtt:meter-a', evidence: { requestId: 'meter-a-x1', decision: 'hold', count: 1 } });
    expect(conflict.evidence.presentedKey).not.toBe(conflict.evidence.heldKey);
  });

  it('reports a revoked device whose certificate is still presented to the mutual-TLS listener', async () => {
    const revoked = await cli('devices', 'revoke', 'meter-b', '--reason', 'keyCompromise');
    expect(revoked.code, revoked.stderr).toBe(0);
    const attempt = mqtt.connectAsync(`mqtts://127.0.0.1:${ports.mtls}`, {
      clientId: 'meter-b-1',
      key: readPem(join(tmp.dir, 'meter-b.key')),
      cert: readPem(join(tmp.dir, 'meter-b.crt')),
      ca: readPem(cafile),
      reconnectPeriod: 0,
      connectTimeout: 5_000,
    });
    await expect(attempt).rejects.toThrow();
    const seen = await awaitFinding('revoked_connecting', 'mqtt:meter-b');
    expect(seen).toMatchObject({ deviceId: 'mqtt:meter-b', evidence: { via: 'mutual-tls', certificateStatus: 'revoked', deviceState: 'revoked' } });
    expect(seen.evidence.remoteAddress).toMatch(/127\.0\.0\.1$/);
  });

  it('reports a client refused on the provisioning listener for a client id that is no device id', async () => {
    await expect(
      mqtt.connectAsync(`mqtts://127.0.0.1:${ports.provisioning}`, { clientId: 'not a device', ca: readPem(cafile), reconnectPeriod: 0 }),
    ).rejects.toThrow();
    const seen = await awaitFinding('shadow.unenrolled_client', 'mqtt:not a device');
    expect(seen).toMatchObject({ deviceId: null, evidence: { clientId: 'not a device', refused: 'bad_client_id', left: true } });
    expect(seen.evidence.remoteAddress).toMatch(/127\.0\.0\.1$/);
    // The devices that enrolled on the same listener are not in it.
    expect(last.map((f) => f.subject)).toEqual(['mqtt:not a device']);
  });

  it('folds the client ids one address uses beyond 20 into one finding, mqtt:@<address>, that counts them', async () => {
    // 'not a device' above is the address's first; 30 more client ids: 19 keep their own subject, 11 are folded.
    for (let i = 0; i < 30; i++)
      await expect(
        mqtt.connectAsync(`mqtts://127.0.0.1:${ports.provisioning}`, { clientId: `stranger ${i}`, ca: readPem(cafile), reconnectPeriod: 0 }),
      ).rejects.toThrow();
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = await cli('report', '--json', '--kind', 'shadow.unenrolled_client');
      expect(r.code, r.stderr).toBe(0);
      last = (JSON.parse(r.stdout) as { findings: FindingJson[] }).findings;
      const folded = last.find((f) => f.subject.startsWith('mqtt:@'));
      if (folded?.evidence.folded === 11) {
        expect(folded.subject).toBe(`mqtt:@${String(folded.evidence.remoteAddress)}`);
        expect(folded.evidence.remoteAddress).toMatch(/127\.0\.0\.1$/);
        break;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for the folded finding; last: ${JSON.stringify(last)}`);
      await sleep(300);
    }
    expect(last.filter((f) => f.subject.startsWith('mqtt:stranger '))).toHaveLength(19);
    expect(last).toHaveLength(21);
  });
});
