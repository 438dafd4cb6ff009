import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../../agent/store/database.js';
import { parseCsr } from '../../../certs/x509/csr.js';
import { simulateDevices } from '../../../scripts/simulate/mqttDevices.js';
import { DeviceRepository } from '../../../agent/store/deviceRepository.js';
import { EnrollmentRepository } from '../../../agent/store/enrollmentRepository.js';
import { CertificateRepository } from '../../../agent/store/certificateRepository.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { deviceRequest, requestOnce } from '../../helpers/enrollment.js';
import { freePort } from '../../helpers/mosquitto.js';
import { openssl, opensslCsr } from '../../helpers/openssl.js';
import { pemBlocks, toPem } from '../../../certs/x509/pem.js';
import { apiUser } from '../../helpers/apiUser.js';

describe('technician decisions and restarts (embedded broker)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let port: number;
  let cafile: string;
  let base: string;
  // The first-start token until a personal administrator retires it; `ca` commands work on the CA files and take no token.
  let adminToken: string | undefined;
  const cli = (...args: string[]) =>
    runCli([...args, '--config', config, ...(adminToken && args[0] !== 'ca' && !args.includes('--token') ? ['--token', adminToken] : [])]);
  const enroll = (name: string, payload: Record<string, unknown>) => requestOnce(port, cafile, name, payload, { v5: false });
  const start = async () => {
    daemon = Daemon.start(config, { env: { EDGE_AGENT_MQTT_PROVISIONING_PORT: String(port) } });
    base = await daemon.ready();
    writeFileSync(cafile, await (await fetch(`${base}/ca/chain`)).text());
  };
  const stop = async () => {
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  };

  beforeAll(async () => {
    tmp = tempDir();
    port = await freePort();
    cafile = join(tmp.dir, 'ca.pem');
    config = writeConfig(
      tmp.dir,
      ['agent:', '  id: gw-tech', `  dataDir: ${join(tmp.dir, 'data')}`, 'http:', '  port: 0', 'mqtt:', '  actionPollMs: 100', ''].join('\n'),
    );
    await start();
  }, 60_000);
  afterAll(async () => {
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('rejects a held device; its later requests wait for a technician whatever the rules say', async () => {
    const request = await deviceRequest(tmp.dir, 'valve-1');
    expect((await enroll('valve-1', request)).answer?.status).toBe('pending');
    const reject = await cli('devices', 'reject', 'valve-1', '--reason', 'unknown vendor', '--token', await apiUser(config, 'tech-b', 'technician'));
    expect(reject.code, reject.stderr).toBe(0);
    expect((await enroll('valve-1', request)).answer).toMatchObject({ status: 'rejected', reason: 'rejected by tech-b: unknown vendor' });
    const token = (JSON.parse((await cli('devices', 'token', 'create', '--json')).stdout) as { token: string }).token;
    const retry = await enroll('valve-1', { ...request, requestId: 'valve-1-r2', enrollmentToken: token });
    expect(retry.answer).toMatchObject({ status: 'pending', reason: expect.stringMatching(/technician rejected/) });
  });

  it('refuses to approve when requests with different keys wait, and approves the one named with --request', async () => {
    const first = await deviceRequest(tmp.dir, 'valve-7');
    expect((await enroll('valve-7', first)).answer?.status).toBe('pending');
    const other = await opensslCsr(tmp.dir, 'valve-7-other', 'ec-p256', { subject: '/CN=valve-7' });
    expect((await enroll('valve-7', { ...first, requestId: 'valve-7-r2', csr: other })).answer?.status).toBe('pending');
    const shown = await cli('devices', 'show', 'valve-7');
    expect(shown.stdout).toMatch(/waiting: request valve-7-r1, key SHA-256 [0-9a-f]{64}/);
    const ambiguous = await cli('devices', 'approve', 'valve-7');
    expect(ambiguous.code).toBe(1);
    expect(ambiguous.stderr).toMatch(/2 requests waiting with different keys; choose one with --request/);
    const chosen = await cli('devices', 'approve', 'valve-7', '--request', 'valve-7-r1');
    expect(chosen.code, chosen.stderr).toBe(0);
    expect((await cli('devices', 'show', 'valve-7')).stdout).toMatch(/^mqtt:valve-7: provisioned/);
    // (a third request from valve-7 is the last its rate limit allows in a burst)
    expect((await enroll('valve-7', { ...first, requestId: 'valve-7-r2', csr: other })).answer).toMatchObject({
      status: 'rejected',
      reason: expect.stringMatching(/approved request valve-7-r1/),
    });
  });

  it('refuses a decision that does not apply, with a clear message and exit code 1', async () => {
    const r = await cli('devices', 'revoke', 'valve-1');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/REFUSED: revoke refused: mqtt:valve-1 is pending, not provisioned/);
    const unknown = await cli('devices', 'approve', 'nobody');
    expect(unknown.code).toBe(64);
    expect(unknown.stderr).toMatch(/no device mqtt:nobody/);
  });

  it('revokes with the reason given, which the CRL entry carries; refuses a reason the CRL cannot carry, with the list (CLI and API)', async () => {
    expect((await enroll('valve-9', await deviceRequest(tmp.dir, 'valve-9'))).answer?.status).toBe('pending');
    expect((await cli('devices', 'approve', 'valve-9')).code).toBe(0);
    // A personal administrator: making its token retires the first-start token (docs/operations.md), so the CLI uses this one from here on.
    const admin = await apiUser(config, 'admin-rev', 'admin');
    adminToken = admin;
    const api = async <T>(path: string, body?: unknown): Promise<{ status: number; body: T }> => {
      const res = await fetch(`${base}${path}`, {
        method: body ? 'POST' : 'GET',
        headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.status, body: (await res.json()) as T };
    };
    const serial = (await api<{ items: { serial: string; status: string }[] }>('/api/v1/certificates?identity=valve-9')).body.items.find(
      (c) => c.status === 'valid',
    )!.serial;
    const list = 'unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn';

    const stolen = await cli('devices', 'revoke', 'valve-9', '--reason', 'stolen');
    expect(stolen.code).toBe(64);
    expect(stolen.stderr).toContain(`--reason "stolen" is not a revocation reason: give one of ${list}`);
    const viaApi = await api<{ message: string }>('/api/v1/devices/mqtt:valve-9/revoke', { reason: 'stolen' });
    expect(viaApi.status).toBe(400);
    expect(viaApi.body.message).toContain(`reason: must be one of ${list}`);
    expect((await api<{ device: { state: string } }>('/api/v1/devices/mqtt:valve-9')).body.device.state).toBe('provisioned');

    const revoked = await cli('devices', 'revoke', 'valve-9', '--reason', 'keyCompromise', '--note', 'stolen from line 3');
    expect(revoked.code, revoked.stderr).toBe(0);
    const shown = (await api<{ device: { state: string }; history: { cause: string }[] }>('/api/v1/devices/mqtt:valve-9')).body;
    expect(shown.device.state).toBe('revoked');
    expect(shown.history.map((h) => h.cause)).toContainEqual(expect.stringContaining('keyCompromise: stolen from line 3'));
    // openssl reads the reason code of the entry in the CRL the daemon serves.
    const crls = pemBlocks(await (await fetch(`${base}/ca/crl`)).text());
    let text = '';
    for (const [i, crl] of crls.entries()) {
      writeFileSync(join(tmp.dir, `crl-${i}.pem`), toPem('X509 CRL', crl.der));
      const out = await openssl(['crl', '-in', `crl-${i}.pem`, '-noout', '-text'], tmp.dir);
      expect(out.ok, out.stderr).toBe(true);
      text += out.stdout;
    }
    expect(text).toMatch(
      new RegExp(
        String.raw`Serial Number: ${serial.toUpperCase()}\s+Revocation Date: [^\n]+\s+CRL entry extensions:\s+X509v3 CRL Reason Code:\s+Key Compromise\n`,
      ),
    );
  }, 60_000);

  it('queues a decision while the daemon is down and carries it out at start', async () => {
    const request = await deviceRequest(tmp.dir, 'valve-2');
    expect((await enroll('valve-2', request)).answer?.status).toBe('pending');
    await stop();
    // Without --local a change is not made behind the daemon's back.
    const refused = await cli('devices', 'approve', 'valve-2');
    expect(refused.code).toBe(69);
    expect(refused.stderr).toMatch(/DAEMON_UNAVAILABLE: the daemon is not running .*--local/);
    const queued = await cli('devices', 'approve', 'valve-2', '--local');
    expect(queued.code, queued.stderr).toBe(0);
    expect(queued.stdout).toMatch(/queued .*daemon is not running/);
    await start();
    expect((await enroll('valve-2', request)).answer?.status).toBe('issued');
  });

  it('enrolls a batch of simulated devices end to end (scripts/simulate/mqtt-devices)', async () => {
    const token = (JSON.parse((await cli('devices', 'token', 'create', '--uses', '20', '--json')).stdout) as { token: string }).token;
    const result = await simulateDevices({ provisioningUrl: `mqtts://127.0.0.1:${port}`, caFile: cafile, count: 20, concurrency: 5, token, idPrefix: 'sim-' });
    expect(result.devices.filter((d) => d.status !== 'issued').map((d) => `${d.id} ${d.status} ${d.reason}`)).toEqual([]);
    const listed = JSON.parse((await cli('devices', 'list', '--state', 'provisioned', '--json')).stdout) as { name: string }[];
    expect(listed.filter((d) => d.name.startsWith('sim-'))).toHaveLength(20);
  });

  it('issues at start for a request approved before a crash, once', async () => {
    const request = await deviceRequest(tmp.dir, 'valve-3');
    await stop();
    // The state a crash right after the approval leaves: the request approved, no certificate yet.
    const { store } = Store.open(
      { path: join(tmp.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    );
    store.transaction(() => {
      new DeviceRepository(store).apply({ protocol: 'mqtt', name: 'valve-3', to: 'pending', cause: 'request valve-3-r1: approved', actor: 'policy' });
      new EnrollmentRepository(store).insert({
        deviceId: 'mqtt:valve-3',
        requestId: 'valve-3-r1', // The digest the agent records for a request's CSR: SHA-256 of the trimmed PEM.
        csrSha256: createHash('sha256')
          .update((request.csr as string).trim())
          .digest('hex'),
        spkiSha256: parseCsr(request.csr as string).publicKey.sha256,
        csr: request.csr as string,
        nameplate: request.nameplate as { manufacturer: string },
        status: 'approved',
        reason: 'test',
        decidedBy: 'rule 1 (token)',
        receivedAt: new Date(),
      });
    });
    store.close();
    await start();
    const answer = await enroll('valve-3', request);
    expect(answer.answer?.status, answer.output).toBe('issued');
    const list = JSON.parse((await cli('ca', 'list', '--json')).stdout) as { identity: string }[];
    expect(list.filter((c) => c.identity === 'valve-3')).toHaveLength(1);
  });

  it('records a certificate and its request outcome in one commit: a kill -9 right after it leaves both, and the device gets that certificate', async () => {
    const token = (JSON.parse((await cli('devices', 'token', 'create', '--json')).stdout) as { token: string }).token;
    const request = await deviceRequest(tmp.dir, 'valve-4', { enrollmentToken: token });
    await stop();
    daemon = Daemon.start(config, { env: { EDGE_AGENT_MQTT_PROVISIONING_PORT: String(port), EDGE_AGENT_FAILPOINT: 'enrollment.issue.after-commit' } });
    await daemon.ready();
    // Killed after the commit, before the broker is opened or any answer leaves.
    expect((await enroll('valve-4', request)).answer).toBeUndefined();
    expect((await daemon.exited).signal).toBe('SIGKILL');
    const { store } = Store.open(
      { path: join(tmp.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    );
    const recorded = new EnrollmentRepository(store).get('mqtt:valve-4', 'valve-4-r1');
    const device = new DeviceRepository(store).byName('mqtt', 'valve-4');
    const certificates = new CertificateRepository(store).list({ identity: 'valve-4' });
    store.close();
    // Never a certificate without the outcome that explains it (nor the reverse).
    expect(recorded).toMatchObject({ status: 'issued', certificateSerial: expect.any(String) });
    expect(certificates.map((c) => [c.serial, c.status])).toEqual([[recorded!.certificateSerial, 'valid']]);
    expect(device).toMatchObject({ state: 'provisioned', certificateSerial: recorded!.certificateSerial });
    await start();
    // The device repeats its request: the certificate of that commit, nothing issued again.
    const again = await enroll('valve-4', request);
    expect(again.answer, again.output).toMatchObject({ status: 'issued', certificate: certificates[0]!.pem });
    const list = JSON.parse((await cli('ca', 'list', '--json')).stdout) as { identity: string }[];
    expect(list.filter((c) => c.identity === 'valve-4')).toHaveLength(1);
  });
});
