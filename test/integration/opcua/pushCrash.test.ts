import { X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { OPCUAClient } from 'node-opcua-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { certificateManagerIn, startOpcuaServer, thumbprint, type OpcuaServerHandle } from '../../helpers/opcuaServer.js';

interface Job {
  deviceId: string;
  status: string;
  step: string;
  serial?: string;
  reason?: string;
}
interface Cert {
  serial: string;
  status: string;
  identity: string;
  revocationReason?: string;
}

const ADMIN = { username: 'secadmin', password: 'crash-test-secret' };

async function served(url: string, dir: string): Promise<Buffer> {
  const pki = await certificateManagerIn(dir, { acceptUnknown: true, keySlot: 'probe' });
  const client = OPCUAClient.create({ clientCertificateManager: pki, endpointMustExist: false, connectionStrategy: { maxRetry: 0 } });
  try {
    await client.connect(url);
    return Buffer.from((await client.getEndpoints()).find((e) => e.serverCertificate?.length)!.serverCertificate);
  } finally {
    await client.disconnect();
    await pki.dispose();
  }
}

describe('a push cut off by a crash between UpdateCertificate and ApplyChanges', () => {
  let tmp: ReturnType<typeof tempDir>;
  let server: OpcuaServerHandle;
  let capper: OpcuaServerHandle;
  let third: Daemon | undefined;
  let fourth: Daemon | undefined;
  let config: string;
  let first: Daemon | undefined;
  let second: Daemon | undefined;
  const cli = async <T>(...args: string[]) => {
    const r = await runCli([...args, '--config', config, '--json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };

  beforeAll(async () => {
    tmp = tempDir();
    [server, capper] = await Promise.all([
      startOpcuaServer({
        host: '127.0.0.7',
        applicationUri: 'urn:plant3:filler-1',
        securityModes: 'secure',
        acceptUnknownClientCertificates: false,
        pushManagement: { securityAdmin: ADMIN },
      }),
      // No rule approves it: a technician does, later.
      startOpcuaServer({
        host: '127.0.0.8',
        applicationUri: 'urn:plant4:capper-2',
        securityModes: 'secure',
        acceptUnknownClientCertificates: false,
        pushManagement: { securityAdmin: ADMIN },
      }),
    ]);
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-crash',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'ca:',
        '  rootKeyType: rsa-2048',
        'opcua:',
        `  endpoints: [${server.endpointUrl}, ${capper.endpointUrl}]`,
        '  timeoutMs: 8000',
        '  push:',
        "    approve: [{ applicationUri: 'urn:plant3:*' }]",
        `    securityAdmins: [{ applicationUri: 'urn:plant*', username: ${ADMIN.username}, password: ${ADMIN.password} }]`,
        '    stepTimeoutMs: 10000',
        '    retryInitialMs: 600000',
        '',
      ].join('\n'),
    );
  }, 180_000);

  afterAll(async () => {
    for (const d of [first, second, third, fourth]) await d?.dispose();
    await server?.stop();
    await capper?.stop();
    tmp?.cleanup();
  });

  it('is completed by the next start, and the certificate never applied is revoked', async () => {
    first = Daemon.start(config, { env: { EDGE_AGENT_FAILPOINT: 'opcua.push.after-update' } });
    await first.ready();
    const bundle = join(tmp.dir, 'bundle');
    expect((await runCli(['opcua', 'client-bundle', '--out', bundle, '--config', config])).code).toBe(0);
    const read = (sub: string) => readdirSync(join(bundle, sub)).map((f) => readFileSync(join(bundle, sub, f)));
    const trust = { certificate: read('trusted/certs')[0]!, issuers: read('issuers/certs'), crls: read('issuers/crl') };
    await server.trustCaIssuedClient(trust);
    await capper.trustCaIssuedClient(trust);
    void runCli(['opcua', 'discover', '--config', config, '--wait', '0']);
    const exit = await first.exited;
    expect(exit.signal).toBe('SIGKILL');

    // What the crash left: the certificate issued and recorded, UpdateCertificate sent, ApplyChanges never.
    const cut = (await cli<{ jobs: Job[] }>('opcua', 'push-status')).jobs.find((j) => j.deviceId.includes('filler'));
    expect(cut).toMatchObject({ status: 'running', step: 'update' });
    const orphan = cut!.serial!;
    expect((await cli<Cert[]>('ca', 'list')).find((c) => c.serial === orphan)).toMatchObject({ status: 'valid' });
    expect(thumbprint(await served(server.endpointUrl, join(tmp.dir, 'pki-1')))).toBe(server.certificateThumbprint);

    second = Daemon.start(config);
    await second.ready();
    const deadline = Date.now() + 60_000;
    let job: Job | undefined;
    while (Date.now() < deadline) {
      job = (await cli<{ jobs: Job[] }>('opcua', 'push-status')).jobs.find((j) => j.deviceId.includes('filler'));
      if (job && job.status !== 'running') break;
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(job, job?.reason).toMatchObject({ status: 'done' });
    expect(job!.serial).not.toBe(orphan);
    const certs = (await cli<Cert[]>('ca', 'list')).filter((c) => c.identity === server.applicationUri);
    // No orphan: the only valid certificate of the server is the one it presents.
    expect(certs.filter((c) => c.status === 'valid').map((c) => c.serial)).toEqual([job!.serial]);
    expect(certs.find((c) => c.serial === orphan)).toMatchObject({ status: 'revoked', revocationReason: 'superseded' });
    const now = await served(server.endpointUrl, join(tmp.dir, 'pki-2'));
    expect(new X509Certificate(now).serialNumber.toLowerCase()).toBe(job!.serial);
    await second.waitForLog((l) => l.msg === 'certificate issued by an earlier push that the server never applied: revoked' && l.serial === orphan);
  }, 120_000);

  it('revokes what a push cut off by a crash issued when a technician then rejects the server', async () => {
    await second!.kill('SIGTERM');
    await second!.exited;
    const devices = await cli<{ id: string; state: string }[]>('devices', 'list');
    const id = devices.find((d) => d.id.includes('capper'))!.id;
    expect(devices.find((d) => d.id === id)!.state).toBe('discovered');
    third = Daemon.start(config, { env: { EDGE_AGENT_FAILPOINT: 'opcua.push.after-update' } });
    await third.ready();
    expect((await runCli(['devices', 'approve', id, '--wait', '0', '--config', config])).code).toBe(0);
    expect((await third.exited).signal).toBe('SIGKILL');
    const cut = (await cli<{ jobs: Job[] }>('opcua', 'push-status')).jobs.find((j) => j.deviceId === id)!;
    expect(cut).toMatchObject({ status: 'running', step: 'update' });
    // Decided while the daemon is down; carried out first thing at the next start, before any push.
    const rejected = await runCli(['devices', 'reject', id, '--reason', 'wrong cell', '--local', '--config', config]);
    expect(rejected.stdout).toContain('the daemon is not running');
    fourth = Daemon.start(config);
    await fourth.ready();
    await fourth.waitForLog((l) => l.msg === 'device action done' && l.device === id);
    const job = (await cli<{ jobs: Job[] }>('opcua', 'push-status')).jobs.find((j) => j.deviceId === id);
    expect(job).toMatchObject({ status: 'stopped' });
    expect((await cli<Cert[]>('ca', 'list')).filter((c) => c.identity === capper.applicationUri)).toEqual([
      expect.objectContaining({ serial: cut.serial, status: 'revoked', revocationReason: 'superseded' }),
    ]);
    expect(thumbprint(await served(capper.endpointUrl, join(tmp.dir, 'pki-3')))).toBe(capper.certificateThumbprint);
    expect((await cli<{ device: { state: string } }>('devices', 'show', id)).device.state).toBe('rejected');
  }, 120_000);
});
