import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
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
}

const ADMIN = { username: 'secadmin', password: 'Trust-1-secret' };
const RETRY_INITIAL_MS = 600_000;
const RETRY_MAX_MS = 3_600_000;

/**
 * Trust between the agent and the servers it pushes to, against real
 * node-opcua 2.157 servers: a server that was never told to trust the
 * agent (its client bundle not installed, the most likely first
 * commissioning fault), one given the bundle without its CRLs.
 */
describe('OPC UA push: servers that do not trust the agent', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let stranger: OpcuaServerHandle;
  let nocrl: OpcuaServerHandle;
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const json = async <T>(...args: string[]) => {
    const r = await cli(...args, '--json');
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  const jobs = async () => (await json<{ jobs: Job[] }>('opcua', 'push-status')).jobs;
  const deviceOf = async (uri: string) =>
    (await json<{ id: string; source: { opcua?: { applicationUri: string } } }[]>('devices', 'list')).find((d) => d.source.opcua?.applicationUri === uri)!.id;
  async function until<T>(what: string, find: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = await find();
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; push jobs: ${JSON.stringify(await jobs())}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  /** The job once an attempt after `attempts` has ended. */
  const settled = (id: string, attempts = 0) =>
    until(`an attempt on ${id}`, async () =>
      (await jobs()).find((j) => j.deviceId === id && j.attempts > attempts && ['done', 'failed', 'unsupported', 'stopped'].includes(j.status)),
    );
  const bundle = () => {
    const read = (sub: string) => readdirSync(join(tmp.dir, 'bundle', sub)).map((f) => readFileSync(join(tmp.dir, 'bundle', sub, f)));
    return { certificate: read('trusted/certs')[0]!, issuers: read('issuers/certs'), crls: read('issuers/crl') };
  };

  beforeAll(async () => {
    tmp = tempDir();
    const secure = { securityModes: 'secure' as const, acceptUnknownClientCertificates: false, pushManagement: { securityAdmin: ADMIN } };
    [stranger, nocrl] = await Promise.all([
      startOpcuaServer({ host: '127.0.0.2', applicationUri: 'urn:plant5:stranger-1', ...secure }),
      startOpcuaServer({ host: '127.0.0.3', applicationUri: 'urn:plant5:nocrl-2', ...secure }),
    ]);
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-trust',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'ca:',
        '  rootKeyType: rsa-2048',
        'opcua:',
        `  endpoints: [${[stranger, nocrl].map((s) => s.endpointUrl).join(', ')}]`,
        '  timeoutMs: 8000',
        '  push:',
        `    securityAdmins: [{ applicationUri: 'urn:plant5:*', username: ${ADMIN.username}, password: ${ADMIN.password} }]`,
        '    stepTimeoutMs: 10000',
        '    applyWaitMs: 20000',
        `    retryInitialMs: ${RETRY_INITIAL_MS}`,
        `    retryMaxMs: ${RETRY_MAX_MS}`,
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    await daemon.ready();
    const made = await cli('opcua', 'client-bundle', '--out', join(tmp.dir, 'bundle'));
    expect(made.code, made.stderr).toBe(0);
    // Half a commissioning: the agent and our CAs trusted, but none of their CRLs.
    await nocrl.trustCaIssuedClient({ ...bundle(), crls: [] });
    const run = await cli('opcua', 'discover', '--json');
    expect(run.code, run.stderr).toBe(0);
  }, 120_000);

  afterAll(async () => {
    await daemon?.dispose();
    await Promise.all([stranger, nocrl].map((s) => s?.stop()));
    tmp?.cleanup();
  });

  it("says that a server without the client bundle does not trust the agent's certificate, and backs off as for a configuration fault", async () => {
    const id = await deviceOf(stranger.applicationUri);
    const before = Date.now();
    expect((await cli('devices', 'approve', id)).code).toBe(0);
    const job = await settled(id);
    expect(job.status, job.reason).toBe('unsupported');
    expect(job.reason).toBe(
      "the server does not trust the agent's certificate: install `edge-agent opcua client-bundle` on it (node-opcua servers read it only at start); " +
        'it answered BadSecurityChecksFailed ' +
        '(a node-opcua server also keeps refusing a certificate it has put in its rejected folder until it is deleted there)',
    );
    // Looked at again after retryMaxMs, not after the first retry's wait.
    expect(new Date(job.nextAttemptAt!).getTime()).toBeGreaterThanOrEqual(before + RETRY_MAX_MS);
    const { steps } = await json<{ steps: Step[] }>('opcua', 'push-status', '--id', id);
    expect(steps.filter((s) => s.outcome === 'failed').map((s) => [s.step, s.detail])).toEqual([['session', job.reason]]);
    expect((await json<Cert[]>('ca', 'list')).filter((c) => c.identity === stranger.applicationUri)).toEqual([]);
    const shown = await json<{ device: { state: string; reason?: string } }>('devices', 'show', id);
    expect(shown.device).toMatchObject({ state: 'pending', reason: job.reason });

    // Once the operator has done what it says, a new approval pushes at once.
    await stranger.trustCaIssuedClient(bundle());
    expect((await cli('devices', 'approve', id)).code).toBe(0);
    const done = await settled(id);
    expect(done.status, done.reason).toBe('done');
  }, 180_000);

  it('says that a server given the bundle without its CRLs lacks them', async () => {
    const id = await deviceOf(nocrl.applicationUri);
    expect((await cli('devices', 'approve', id)).code).toBe(0);
    const job = await settled(id);
    expect(job.status, job.reason).toBe('unsupported');
    expect(job.reason).toMatch(
      new RegExp(
        /^the server has no CRL for the gateway CA \(it answered Bad(Certificate|CertificateIssuer)RevocationUnknown\): /.source +
          /install the CRLs of `edge-agent opcua client-bundle` \(issuers\/crl\) on it/.source,
      ),
    );
  }, 180_000);
});
