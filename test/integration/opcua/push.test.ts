import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { AttributeIds, MessageSecurityMode, OPCUAClient, SecurityPolicy, UserTokenType } from 'node-opcua-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { openssl } from '../../helpers/openssl.js';
import {
  certificateManagerIn,
  startHangingServer,
  startOpcuaServer,
  thumbprint,
  type OpcuaServerHandle,
  type RawTcpServer,
} from '../../helpers/opcuaServer.js';
import { apiUser } from '../../helpers/apiUser.js';

interface Job {
  deviceId: string;
  status: string;
  step: string;
  attempts: number;
  serial?: string;
  reason?: string;
  crlDelivered?: boolean;
  nextAttemptAt?: string;
}
interface Step {
  step: string;
  outcome: string;
  detail?: string;
  attempt: number;
}
interface Cert {
  serial: string;
  status: string;
  identity: string;
  profile: string;
  revocationReason?: string;
  notBefore: string;
  notAfter: string;
}

const ADMIN = { username: 'secadmin', password: 'Plant-1-secret' };

/** What the operator copies into a server's PKI once (edge-agent opcua client-bundle): the agent's client certificate, our CAs, their CRLs. */
function commissioning(bundle: string) {
  const read = (sub: string) => readdirSync(join(bundle, sub)).map((f) => readFileSync(join(bundle, sub, f)));
  return { certificate: read('trusted/certs')[0]!, issuers: read('issuers/certs'), crls: read('issuers/crl') };
}

describe('OPC UA push provisioning (Part 12) against real node-opcua 2.157 servers', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let press: OpcuaServerHandle;
  let mixer: OpcuaServerHandle;
  let plain: OpcuaServerHandle;
  let locked: OpcuaServerHandle;
  let vanishing: OpcuaServerHandle;
  let nopush: OpcuaServerHandle;
  let swapped: OpcuaServerHandle;
  let hanging: RawTcpServer | undefined;
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const json = async <T>(...args: string[]) => {
    const r = await cli(...args, '--json');
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  const jobs = async () => (await json<{ jobs: Job[] }>('opcua', 'push-status')).jobs;
  const deviceOf = async (uri: string) => {
    const found = (await json<{ id: string; source: { opcua?: { applicationUri: string } } }[]>('devices', 'list')).find(
      (d) => d.source.opcua?.applicationUri === uri,
    );
    if (!found) throw new Error(`discovery did not put ${uri} in the inventory`);
    return found.id;
  };
  async function until<T>(what: string, find: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = await find();
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; push jobs: ${JSON.stringify(await jobs())}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  const settled = (id: string, statuses: string[]) =>
    until(`${id} in ${statuses.join('/')}`, async () => (await jobs()).find((j) => j.deviceId === id && statuses.includes(j.status)));

  beforeAll(async () => {
    tmp = tempDir();
    const secure = {
      securityModes: 'secure' as const,
      acceptUnknownClientCertificates: false,
      pushManagement: { securityAdmin: ADMIN, users: [{ username: 'operator', password: 'op' }] },
    };
    [press, mixer, plain, locked, vanishing, nopush, swapped] = await Promise.all([
      startOpcuaServer({ host: '127.0.0.2', applicationUri: 'urn:plant1:press-7', applicationName: 'Press 7', ...secure }),
      startOpcuaServer({ host: '127.0.0.3', applicationUri: 'urn:plant1:mixer-2', applicationName: 'Mixer 2', ...secure }),
      startOpcuaServer({ host: '127.0.0.4', applicationUri: 'urn:plant1:legacy-hmi' }),
      startOpcuaServer({ host: '127.0.0.5', applicationUri: 'urn:plant2:oven-1', ...secure }),
      startOpcuaServer({ host: '127.0.0.6', applicationUri: 'urn:plant1:dryer-4', ...secure }),
      // Secure, with the users, but without Part 12 behind its ServerConfiguration nodes.
      startOpcuaServer({ host: '127.0.0.8', applicationUri: 'urn:plant1:scale-3', ...secure, pushManagement: { ...secure.pushManagement, installed: false } }),
      startOpcuaServer({ host: '127.0.0.10', applicationUri: 'urn:plant1:oven-9', ...secure }),
    ]);
    writeFileSync(join(tmp.dir, 'plant1.pass'), `${ADMIN.password}\n`, { mode: 0o600 });
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-push',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        // node-opcua verifies no ECDSA signature in a chain: OPC UA peers like it need an RSA root (docs/opcua.md).
        'ca:',
        '  rootKeyType: rsa-2048',
        'opcua:',
        `  endpoints: [${[press, mixer, plain, locked, vanishing, nopush, swapped].map((s) => s.endpointUrl).join(', ')}]`,
        '  timeoutMs: 8000',
        '  push:',
        '    approve:',
        "      - { applicationUri: 'urn:plant1:press-*' }",
        '    securityAdmins:',
        `      - { applicationUri: 'urn:plant1:*', username: ${ADMIN.username}, passwordFile: ${join(tmp.dir, 'plant1.pass')} }`,
        "      - { applicationUri: 'urn:plant2:*', username: secadmin, password: not-the-password }",
        '    stepTimeoutMs: 10000',
        '    applyWaitMs: 20000',
        // Failures wait for the test, not for a retry.
        '    retryInitialMs: 600000',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    await daemon.ready();
    // The one-time commissioning: each server is told to trust the agent's client certificate (and our CA's CRLs, which node-opcua insists on).
    const bundle = await cli('opcua', 'client-bundle', '--out', join(tmp.dir, 'bundle'));
    expect(bundle.code, bundle.stderr).toBe(0);
    await Promise.all([press, mixer, locked, vanishing, nopush].map((s) => s.trustCaIssuedClient(commissioning(join(tmp.dir, 'bundle')))));
    const run = await cli('opcua', 'discover', '--json');
    expect(run.code, run.stderr).toBe(0);
  }, 180_000);

  afterAll(async () => {
    await daemon?.dispose();
    await Promise.all([press, mixer, plain, locked, vanishing, nopush, swapped, hanging].map((s) => s?.stop()));
    tmp?.cleanup();
  });

  it('pushes a certificate to a server a policy rule approves, and a client that trusts only our CA then trusts the server', async () => {
    const id = (await deviceOf(press.applicationUri))!;
    const job = await settled(id, ['done', 'failed', 'unsupported', 'stopped']);
    // Commissioning gave it our CRLs (node-opcua lets no CA-issued client in without them): it holds them.
    expect(job, job.reason).toMatchObject({ status: 'done', crlDelivered: true });
    const { steps } = await json<{ steps: Step[] }>('opcua', 'push-status', '--id', id);
    // Every step was recorded as begun before it ran, and as ok after, in Part 12's order.
    const oks = steps.filter((s) => s.outcome === 'ok').map((s) => s.step);
    expect(oks).toEqual(['approved', 'connect', 'session', 'csr', 'check-csr', 'issue', 'update', 'trust', 'apply', 'verify']);
    expect(steps.filter((s) => s.outcome === 'begun').map((s) => s.step)).toEqual(oks.slice(1));
    // node-opcua 2.157's TrustList Write is a stub: the issuing CA goes in by AddCertificate, and the CRLs it holds are commissioning's.
    expect(steps.find((s) => s.step === 'trust' && s.outcome === 'ok')?.detail).toMatch(
      /^issuing CA trusted by AddCertificate \((its TrustList takes no writes|it took the TrustList write but does not hold it when read back)\b.*; CRLs held$/,
    );

    // openssl, independently: the server's certificate chains to our root and names its applicationUri.
    const served = await endpointCertificate(press.endpointUrl, join(tmp.dir, 'probe-pki'));
    expect(thumbprint(served)).not.toBe(press.certificateThumbprint);
    expect(new X509Certificate(served).serialNumber.toLowerCase()).toBe(job.serial);
    writeFileSync(join(tmp.dir, 'press.der'), served);
    const chain = readFileSync(join(tmp.dir, 'data', 'ca', 'issuing-rsa.crt'));
    writeFileSync(join(tmp.dir, 'issuing.pem'), chain);
    await openssl(['x509', '-inform', 'DER', '-in', 'press.der', '-out', 'press.pem'], tmp.dir);
    const check = await openssl(['verify', '-CAfile', join(tmp.dir, 'data', 'ca', 'root.crt'), '-untrusted', 'issuing.pem', 'press.pem'], tmp.dir);
    expect(check.stdout, check.stderr).toContain('press.pem: OK');
    const text = (await openssl(['x509', '-in', 'press.pem', '-noout', '-ext', 'subjectAltName,keyUsage,basicConstraints'], tmp.dir)).stdout;
    expect(text).toContain(`URI:${press.applicationUri}`);
    expect(text).toContain('IP Address:127.0.0.2');
    expect(text).toContain('CA:FALSE');
    const certs = await json<Cert[]>('ca', 'list');
    const mine = certs.filter((c) => c.identity === press.applicationUri);
    expect(mine.filter((c) => c.status === 'valid').map((c) => c.serial)).toEqual([job.serial]);

    // A separate client that trusts only our CA (no pinning, no auto-accept) opens a secure session to the server.
    const pki = await certificateManagerIn(join(tmp.dir, 'verifier-pki'), { acceptUnknown: false, keySlot: 'verifier' });
    const bundle = commissioning(join(tmp.dir, 'bundle'));
    for (const ca of bundle.issuers) await pki.addIssuer(ca, false, true);
    for (const crl of bundle.crls) await pki.addRevocationList(crl);
    await pki.createSelfSignedCertificate({
      applicationUri: 'urn:test:verifier',
      subject: '/CN=Verifier/O=Test',
      dns: [],
      startDate: new Date(),
      validity: 30,
      outputFile: join(pki.rootDir, 'own', 'certs', 'client_certificate.pem'),
    });
    // The server now trusts our CA: it must still be told about this self-signed test client.
    await press.trustClientCertificate(new X509Certificate(readFileSync(join(pki.rootDir, 'own', 'certs', 'client_certificate.pem'))).raw);
    const client = OPCUAClient.create({
      applicationName: 'verifier',
      applicationUri: 'urn:test:verifier',
      clientCertificateManager: pki,
      securityMode: MessageSecurityMode.SignAndEncrypt,
      securityPolicy: SecurityPolicy.Basic256Sha256,
      endpointMustExist: false,
      connectionStrategy: { maxRetry: 0 },
    });
    try {
      await client.connect(press.endpointUrl);
      const session = await client.createSession({ type: UserTokenType.UserName, userName: 'operator', password: 'op' });
      const status = await session.read({ nodeId: 'i=2259', attributeId: AttributeIds.Value });
      expect(status.statusCode.isGood()).toBe(true);
      await session.close();
    } finally {
      await client.disconnect();
      await pki.dispose();
    }
    // The device record says so, with the serial.
    const shown = await json<{ device: { state: string; certificateSerial?: string } }>('devices', 'show', id);
    expect(shown.device).toMatchObject({ state: 'provisioned', certificateSerial: job.serial });
  }, 120_000);

  it('waits for a technician where no rule approves, and reports CRLs the server would not take', async () => {
    const id = (await deviceOf(mixer.applicationUri))!;
    expect((await jobs()).find((j) => j.deviceId === id)).toBeUndefined();
    expect((await json<{ device: { state: string } }>('devices', 'show', id)).device.state).toBe('discovered');
    // A new CRL since commissioning: the server holds the old one and must be sent this.
    expect((await cli('ca', 'crl')).code).toBe(0);
    const approve = await cli('devices', 'approve', id, '--token', await apiUser(config, 'tech-a', 'technician'), '--reason', 'commissioned today');
    expect(approve.code, approve.stderr).toBe(0);
    expect(approve.stdout).toContain('approved (push queued)');
    const job = await settled(id, ['done', 'failed', 'unsupported', 'stopped']);
    expect(job, job.reason).toMatchObject({ status: 'done', crlDelivered: false });
    expect(job.reason).toMatch(/CRLs not delivered/);
    expect(thumbprint(await endpointCertificate(mixer.endpointUrl, join(tmp.dir, 'mixer-pki')))).not.toBe(mixer.certificateThumbprint);
    const history = await json<{ history: { cause: string; actor: string }[] }>('devices', 'show', id);
    expect(history.history.map((h) => h.actor)).toContain('technician:tech-a');
  }, 120_000);

  it('does not push to a server that offers only SecurityMode None, and says why', async () => {
    const id = (await deviceOf(plain.applicationUri))!;
    const approved = await cli('devices', 'approve', id);
    expect(approved.code, approved.stderr).toBe(0);
    const job = await settled(id, ['done', 'failed', 'unsupported', 'stopped']);
    expect(job.status).toBe('unsupported');
    expect(job.reason).toMatch(/no SignAndEncrypt endpoint .*never sent over a weaker channel/);
    expect(thumbprint(await endpointCertificate(plain.endpointUrl, join(tmp.dir, 'plain-pki')))).toBe(plain.certificateThumbprint);
    const certs = await json<Cert[]>('ca', 'list');
    expect(certs.filter((c) => c.identity === plain.applicationUri)).toEqual([]);
  }, 180_000);

  it('says so for a server without push management, and points to the bundle for installing by hand', async () => {
    const id = (await deviceOf(nopush.applicationUri))!;
    const approved = await cli('devices', 'approve', id);
    expect(approved.code, approved.stderr).toBe(0);
    const job = await settled(id, ['done', 'failed', 'unsupported', 'stopped']);
    expect(job.status, job.reason).toBe('unsupported');
    expect(job.reason).toMatch(
      /^the server has no push management \(ServerConfiguration's CreateSigningRequest, UpdateCertificate, ApplyChanges are absent or not executable\)/,
    );
    expect(job.reason).toContain(`edge-agent opcua export-bundle --id ${id}`);
    expect((await json<Cert[]>('ca', 'list')).filter((c) => c.identity === nopush.applicationUri)).toEqual([]);
  }, 180_000);

  it('refuses wrong SecurityAdmin credentials: nothing is issued, the reason is recorded and a retry scheduled', async () => {
    const id = (await deviceOf(locked.applicationUri))!;
    const before = Date.now();
    const approved = await cli('devices', 'approve', id);
    expect(approved.code, approved.stderr).toBe(0);
    const job = await settled(id, ['done', 'failed', 'unsupported', 'stopped']);
    expect(job.status).toBe('failed');
    expect(job.reason).toMatch(/^session: no SecurityAdmin session as secadmin: /);
    expect(job.reason).toMatch(/BadIdentityTokenRejected|BadUserAccessDenied/);
    expect(new Date(job.nextAttemptAt!).getTime()).toBeGreaterThan(before + 60_000);
    const certs = await json<Cert[]>('ca', 'list');
    expect(certs.filter((c) => c.identity === locked.applicationUri)).toEqual([]);
    expect(thumbprint(await endpointCertificate(locked.endpointUrl, join(tmp.dir, 'locked-pki')))).toBe(locked.certificateThumbprint);
    const shown = await json<{ device: { state: string; reason?: string } }>('devices', 'show', id);
    expect(shown.device).toMatchObject({ state: 'pending', reason: job.reason });
  }, 180_000);

  it('sends no credentials to a server whose certificate is not the one approved, and stops', async () => {
    const id = (await deviceOf(swapped.applicationUri))!;
    const { host, port, applicationUri } = swapped;
    const approved = swapped.certificateThumbprint;
    // Another server (a new key, the same address and applicationUri) where the approved one was.
    await swapped.stop();
    swapped = await startOpcuaServer({
      host,
      port,
      applicationUri,
      securityModes: 'secure',
      acceptUnknownClientCertificates: true,
      pushManagement: { securityAdmin: ADMIN },
    });
    const approval = await cli('devices', 'approve', id);
    expect(approval.code, approval.stderr).toBe(0);
    const job = await settled(id, ['done', 'failed', 'unsupported', 'stopped']);
    expect(job.status).toBe('stopped');
    expect(job.reason).toContain(`presents certificate ${swapped.certificateThumbprint}, not the one approved (${approved})`);
    const { steps } = await json<{ steps: Step[] }>('opcua', 'push-status', '--id', id);
    expect(steps.map((s) => s.step)).not.toContain('session');
    expect((await json<Cert[]>('ca', 'list')).filter((c) => c.identity === applicationUri)).toEqual([]);
    expect(thumbprint(await endpointCertificate(swapped.endpointUrl, join(tmp.dir, 'swapped-pki')))).toBe(swapped.certificateThumbprint);
  }, 180_000);

  it('gives a server that hangs only its step timeout, and closes its connection', async () => {
    const id = (await deviceOf(vanishing.applicationUri))!;
    const { host, port } = vanishing;
    await vanishing.stop();
    hanging = await startHangingServer(host, port);
    const approved = await cli('devices', 'approve', id);
    expect(approved.code, approved.stderr).toBe(0);
    const job = await settled(id, ['done', 'failed', 'unsupported', 'stopped']);
    expect(job.status).toBe('failed');
    expect(job.reason).toMatch(/^connect: .*(no answer|within 10000 ms)/);
    expect(hanging.connections).toBeGreaterThan(0);
    await until('the hung connection closed', async () => (hanging!.open === 0 ? true : undefined), 10_000);
    // The daemon still answers technicians at once.
    expect((await cli('opcua', 'push-status')).code).toBe(0);
  }, 180_000);

  it('renews when the certificate is due, and revokes the one it replaces', async () => {
    const id = (await deviceOf(press.applicationUri))!;
    const first = (await jobs()).find((j) => j.deviceId === id)!;
    const record = (await json<Cert[]>('ca', 'list')).find((c) => c.serial === first.serial)!;
    // Due at two thirds of its lifetime.
    const lifetime = new Date(record.notAfter).getTime() - new Date(record.notBefore).getTime();
    expect(new Date(first.nextAttemptAt!).getTime()).toBe(new Date(record.notBefore).getTime() + Math.floor((lifetime * 2) / 3));
    // Bring that moment forward, as the daemon's clock would reach it.
    const { default: Database } = await import('better-sqlite3');
    const db = new Database(join(tmp.dir, 'data', 'edge-agent.db'));
    db.pragma('busy_timeout = 5000');
    db.prepare('UPDATE opcua_push_jobs SET next_attempt_at = ? WHERE device_id = ?').run(new Date(Date.now() - 1000).toISOString(), id);
    db.close();
    const renewed = await until('the renewal', async () => (await jobs()).find((j) => j.deviceId === id && j.status === 'done' && j.serial !== first.serial));
    const certs = await json<Cert[]>('ca', 'list');
    expect(certs.find((c) => c.serial === first.serial)).toMatchObject({ status: 'revoked' });
    expect(certs.filter((c) => c.identity === press.applicationUri && c.status === 'valid').map((c) => c.serial)).toEqual([renewed.serial]);
    const served = await endpointCertificate(press.endpointUrl, join(tmp.dir, 'renewed-pki'));
    expect(new X509Certificate(served).serialNumber.toLowerCase()).toBe(renewed.serial);
  }, 120_000);
});

/** The certificate a server's endpoints present (GetEndpoints over SecurityMode None), with a PKI in `dir`, never under the home directory. */
async function endpointCertificate(url: string, dir: string): Promise<Buffer> {
  const pki = await certificateManagerIn(dir, { acceptUnknown: true, keySlot: 'probe' });
  const client = OPCUAClient.create({ clientCertificateManager: pki, endpointMustExist: false, connectionStrategy: { maxRetry: 0 } });
  try {
    await client.connect(url);
    const endpoints = await client.getEndpoints();
    return Buffer.from(endpoints.find((e) => e.serverCertificate?.length)!.serverCertificate);
  } finally {
    await client.disconnect();
    await pki.dispose();
  }
}
