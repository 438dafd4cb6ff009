import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CRL_CANNOT_REASON } from '../../../agent/onboarding/opcuaCrl.js';
import { apiUser } from '../../helpers/apiUser.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { openssl } from '../../helpers/openssl.js';
import { startOpcuaServer, type OpcuaServerHandle } from '../../helpers/opcuaServer.js';

interface Job {
  deviceId: string;
  status: string;
  step: string;
  attempts: number;
  serial?: string;
  reason?: string;
  crlDelivered?: boolean;
  crlWritable?: boolean;
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
}

const ADMIN = { username: 'secadmin', password: 'Crl-1-secret' };

/**
 * The gateway's CRLs after a revocation, on provisioned servers: pushed
 * over Part 12 where the TrustList takes them (a node-opcua server whose
 * CloseAndUpdate the fixture completes, as a full Part 12 server has it),
 * reported in `devices show` and the API where it does not (node-opcua
 * 2.157 as it is).
 */
describe('OPC UA push: CRLs after a revocation', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let base: string;
  let config: string;
  let complete: OpcuaServerHandle;
  let plain: OpcuaServerHandle;
  const ids: Record<string, string> = {};
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const json = async <T>(...args: string[]) => {
    const r = await cli(...args, '--json');
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  const jobs = async () => (await json<{ jobs: Job[] }>('opcua', 'push-status')).jobs;
  const steps = async (id: string) => (await json<{ steps: Step[] }>('opcua', 'push-status', '--id', id)).steps;
  async function until<T>(what: string, find: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = await find();
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; push jobs: ${JSON.stringify(await jobs())}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  beforeAll(async () => {
    tmp = tempDir();
    const secure = { securityModes: 'secure' as const, acceptUnknownClientCertificates: false };
    [complete, plain] = await Promise.all([
      startOpcuaServer({
        host: '127.0.0.2',
        applicationUri: 'urn:plant7:complete-1',
        ...secure,
        pushManagement: { securityAdmin: ADMIN, trustListWrites: true },
      }),
      startOpcuaServer({ host: '127.0.0.3', applicationUri: 'urn:plant7:plain-2', ...secure, pushManagement: { securityAdmin: ADMIN } }),
    ]);
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-crl',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'ca:',
        '  rootKeyType: rsa-2048',
        'opcua:',
        `  endpoints: [${[complete, plain].map((s) => s.endpointUrl).join(', ')}]`,
        '  timeoutMs: 8000',
        '  push:',
        "    approve: [{ applicationUri: 'urn:plant7:*' }]",
        `    securityAdmins: [{ applicationUri: 'urn:plant7:*', username: ${ADMIN.username}, password: ${ADMIN.password} }]`,
        '    stepTimeoutMs: 10000',
        '    applyWaitMs: 20000',
        '    retryInitialMs: 600000',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    base = await daemon.ready();
    expect((await cli('opcua', 'client-bundle', '--out', join(tmp.dir, 'bundle'))).code).toBe(0);
    const read = (sub: string) => readdirSync(join(tmp.dir, 'bundle', sub)).map((f) => readFileSync(join(tmp.dir, 'bundle', sub, f)));
    const bundle = { certificate: read('trusted/certs')[0]!, issuers: read('issuers/certs'), crls: read('issuers/crl') };
    await Promise.all([complete, plain].map((s) => s.trustCaIssuedClient(bundle)));
    expect((await cli('opcua', 'discover', '--json')).code).toBe(0);
    const listed = await json<{ id: string; source: { opcua?: { applicationUri: string } } }[]>('devices', 'list');
    for (const s of [complete, plain]) ids[s.applicationUri] = listed.find((d) => d.source.opcua?.applicationUri === s.applicationUri)!.id;
    for (const id of Object.values(ids)) {
      const job = await until(
        `${id} provisioned`,
        async () => (await jobs()).find((j) => j.deviceId === id && ['done', 'failed', 'unsupported', 'stopped'].includes(j.status)),
        90_000,
      );
      expect(job, job.reason).toMatchObject({ status: 'done', crlDelivered: true });
    }
  }, 180_000);

  afterAll(async () => {
    await daemon?.dispose();
    await Promise.all([complete, plain].map((s) => s?.stop()));
    tmp?.cleanup();
  });

  let revoked: string;

  it('pushes the new CRL after a revocation to a server whose TrustList takes CRLs, issuing nothing', async () => {
    const id = ids[complete.applicationUri]!;
    const before = (await jobs()).find((j) => j.deviceId === id)!;
    // Its TrustList took the write when it was provisioned: that is how the agent knows it can send CRLs.
    expect(before.crlWritable).toBe(true);
    // A certificate from the RSA issuing CA (the one the server trusts), revoked by the CLI beside the daemon.
    const exported = await json<{ serial: string }>('opcua', 'export-bundle', '--id', id, '--out', join(tmp.dir, 'exported'), '--actor', 'tech-c');
    revoked = exported.serial;
    expect((await cli('ca', 'revoke', revoked, '--reason', 'keyCompromise')).code).toBe(0);
    const certificates = async () =>
      (await json<Cert[]>('ca', 'list'))
        .filter((c) => c.identity === complete.applicationUri)
        .map((c) => c.serial)
        .sort();
    const issuedBefore = await certificates();

    const queued = await until('the CRL push queued', async () => (await steps(id)).find((s) => s.step === 'crl'));
    expect(queued).toMatchObject({ outcome: 'ok' });
    const after = await until('the CRL pushed', async () =>
      (await jobs()).find((j) => j.deviceId === id && j.status === 'done' && j.crlDelivered === true && j.attempts === 1),
    );
    // Since the revocation: a session to write the TrustList, and the check that the server still presents its certificate.
    const all = await steps(id);
    expect(
      all
        .slice(all.findIndex((s) => s.step === 'crl') + 1)
        .filter((s) => s.outcome === 'ok')
        .map((s) => s.step),
    ).toEqual(['connect', 'session', 'trust', 'verify']);
    // The certificate it presents stays; nothing new was issued for it.
    expect(after.serial).toBe(before.serial);
    expect(await certificates()).toEqual(issuedBefore);
    // openssl, independently: a CRL in the server's own PKI now lists the revoked serial.
    const folder = join(complete.pkiDir, 'issuers', 'crl');
    const listed = await Promise.all(readdirSync(folder).map(async (f) => (await openssl(['crl', '-in', join(folder, f), '-noout', '-text'], tmp.dir)).stdout));
    const serial = (hex: string) => BigInt(`0x${hex}`);
    expect(listed.flatMap((t) => [...t.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => serial(m[1]!)))).toContain(serial(revoked));
  }, 180_000);

  it('says in devices show and the API device details that a server whose TrustList takes no CRLs lacks the revocation', async () => {
    const id = ids[plain.applicationUri]!;
    const job = await until('the server marked', async () => (await jobs()).find((j) => j.deviceId === id && j.crlDelivered === false));
    // Not retried: it stays done, with what to do.
    expect(job).toMatchObject({ status: 'done', attempts: 1, crlWritable: false, reason: CRL_CANNOT_REASON });
    const shown = await cli('devices', 'show', id);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toContain(
      "  CRLs: the server does not hold the gateway's current CRLs, and its TrustList takes none over OPC UA: " +
        'install them by hand (edge-agent opcua client-bundle, issuers/crl)\n',
    );
    const token = await apiUser(config, 'viewer-v', 'viewer');
    const details = (await (await fetch(`${base}/api/v1/devices/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${token}` } })).json()) as {
      push: Job;
    };
    expect(details.push).toMatchObject({ status: 'done', crlDelivered: false, crlWritable: false, reason: CRL_CANNOT_REASON });
  }, 180_000);
});
