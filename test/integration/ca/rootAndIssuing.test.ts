import { copyFileSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { initCa } from '../../../certs/hierarchy.js';
import { pemBlocks, toPem } from '../../../certs/x509/pem.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { openssl } from '../../helpers/openssl.js';

const DAY = 86_400_000;

/** nextUpdate of a PEM CRL file's first CRL, as openssl reads it. */
async function nextUpdate(dir: string, file: string): Promise<Date> {
  const out = await openssl(['crl', '-in', file, '-noout', '-nextupdate'], dir);
  expect(out.ok, out.stderr).toBe(true);
  return new Date(out.stdout.replace('nextUpdate=', '').trim());
}

describe('the root of the gateway CA', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemons: Daemon[];
  let config: string;
  const yaml = (extra = '') =>
    ['agent:', '  id: gw-root', `  dataDir: ${join(tmp.dir, 'data')}`, 'http:', '  port: 0', 'ca:', '  autoInit: false', extra, ''].join('\n');
  const caDir = () => join(tmp.dir, 'data', 'ca');
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  /** What `ca init` makes for this configuration, without a CLI process. */
  const init = () =>
    initCa({
      dir: caDir(),
      passphrase: undefined,
      organization: 'Edge Agent',
      gatewayId: 'gw-root',
      rootKeyType: 'ec-p256',
      issuers: { ec: 'ec-p256', rsa: 'rsa-2048' },
      rootValidityDays: 7300,
      issuingValidityDays: 3650,
    });
  const start = () => {
    const d = Daemon.start(config);
    daemons.push(d);
    return d;
  };
  const stop = async (d: Daemon) => {
    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(0);
  };
  /** The exit code, or 'started' when the daemon got ready instead. */
  const outcome = (d: Daemon) =>
    d.ready().then(
      () => 'started' as const,
      () => d.exited.then((e) => e.code),
    );
  beforeEach(() => {
    tmp = tempDir();
    daemons = [];
    config = writeConfig(tmp.dir, yaml());
  });
  afterEach(async () => {
    for (const d of daemons) await d.dispose();
    tmp.cleanup();
  });

  it('refuses to start when root.crt does not belong to the root key', async () => {
    init();
    // Another root of the same name: the issuing CAs still chain to theirs, only the pair root.crt/root.key is broken.
    const other = join(tmp.dir, 'other');
    initCa({
      dir: other,
      passphrase: undefined,
      organization: 'Edge Agent',
      gatewayId: 'gw-root',
      rootKeyType: 'ec-p256',
      issuers: {},
      rootValidityDays: 3650,
      issuingValidityDays: 1825,
    });
    copyFileSync(join(other, 'root.crt'), join(caDir(), 'root.crt'));
    const d = start();
    expect(await outcome(d)).toBe(78);
    expect(d.stderr).toContain(`the root key ${join(caDir(), 'root.key')} does not belong to the root certificate ${join(caDir(), 'root.crt')}`);
  });

  it('signs the root CRL for ca.rootCrlValidityDays, again when due while the root key is here, and warns when it is offline', async () => {
    init();
    const made = await nextUpdate(caDir(), 'root.crl');
    expect(Math.abs(made.getTime() - (Date.now() + 90 * DAY))).toBeLessThan(DAY);

    // A shorter setting makes the CRL due; with the root key away, the daemon says so and keeps the CRL it has.
    writeFileSync(config, yaml('  rootCrlValidityDays: 20'));
    renameSync(join(caDir(), 'root.key'), join(tmp.dir, 'root.key.offline'));
    const offline = start();
    await offline.ready();
    const warning = offline.logs.find((l) => l.msg.startsWith('root CRL is due to be signed again and the root key is not on the gateway'));
    expect(warning).toMatchObject({ reason: 'valid longer than ca.rootCrlValidityDays' });
    await stop(offline);
    expect((await nextUpdate(caDir(), 'root.crl')).getTime()).toBe(made.getTime());

    renameSync(join(tmp.dir, 'root.key.offline'), join(caDir(), 'root.key'));
    const back = start();
    await back.ready();
    expect(back.logs.find((l) => l.msg === 'root CRL signed')).toBeDefined();
    await stop(back);
    const resigned = await nextUpdate(caDir(), 'root.crl');
    expect(Math.abs(resigned.getTime() - (Date.now() + 20 * DAY))).toBeLessThan(DAY);
    // The published file carries the root CRL just signed.
    expect(readFileSync(join(caDir(), 'crl.pem'), 'utf8')).toContain(readFileSync(join(caDir(), 'root.crl'), 'utf8'));
    // On demand too, as with the root key brought back for it.
    const onDemand = await cli('ca', 'crl');
    expect(onDemand.code, onDemand.stderr).toBe(0);
    expect((await nextUpdate(caDir(), 'root.crl')).getTime()).toBeGreaterThanOrEqual(resigned.getTime());
  });

  it('revokes an issuing CA: the root CRL lists it, a successor takes its place, and a restored copy is refused', async () => {
    init();
    const issued = await cli('ca', 'issue', '--profile', 'mqtt-device', '--id', 'dev-1', '--generate-key', '--out', join(tmp.dir, 'dev-1'));
    expect(issued.code, issued.stderr).toBe(0);
    const oldIssuing = readFileSync(join(caDir(), 'issuing-ec.crt'), 'utf8');
    const oldSerial = (await openssl(['x509', '-in', join(caDir(), 'issuing-ec.crt'), '-noout', '-serial'], tmp.dir)).stdout.trim().replace('serial=', '');
    // A backup someone kept of the CA's files.
    for (const f of ['issuing-ec.crt', 'issuing-ec.key', 'issuing-ec.chain.pem']) copyFileSync(join(caDir(), f), join(tmp.dir, `backup-${f}`));
    writeFileSync(join(tmp.dir, 'old-issuing.pem'), oldIssuing);

    const running = start();
    await running.ready();
    // What a validator held before: the CRLs the daemon published.
    copyFileSync(join(caDir(), 'crl.pem'), join(tmp.dir, 'before.pem'));
    const refused = await cli('ca', 'revoke-issuing', '--issuer', 'ec', '--reason', 'cACompromise');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('the agent is running and signs with this issuing CA: stop it first');
    await stop(running);

    const revoked = await cli('ca', 'revoke-issuing', '--issuer', 'ec', '--reason', 'cACompromise');
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toContain('new issuing CA: O=Edge Agent, CN=gw-root Issuing CA EC 2');
    const rootCrl = await openssl(['crl', '-in', 'root.crl', '-noout', '-text'], caDir());
    expect(rootCrl.stdout).toMatch(
      new RegExp(String.raw`Serial Number: ${oldSerial}\s+Revocation Date: [^\n]+\s+CRL entry extensions:\s+X509v3 CRL Reason Code:\s+CA Compromise\n`),
    );
    // The revoked CA's key is gone for good; issuing-ec.key is the successor's.
    expect(readFileSync(join(caDir(), 'issuing-ec.key'))).not.toEqual(readFileSync(join(tmp.dir, 'backup-issuing-ec.key')));
    expect(readdirSync(join(caDir(), 'revoked')).sort()).toEqual([
      `issuing-ec-${oldSerial.toLowerCase()}.chain.pem`,
      `issuing-ec-${oldSerial.toLowerCase()}.crt`,
      `issuing-ec-${oldSerial.toLowerCase()}.json`,
    ]);

    // A validator that checks every CA of the chain refuses what the revoked CA issued, with its old CRL and the new root CRL.
    const before = pemBlocks(readFileSync(join(tmp.dir, 'before.pem'), 'utf8')).filter((b) => b.label === 'X509 CRL');
    writeFileSync(
      join(tmp.dir, 'crls.pem'),
      [...before.slice(0, -1).map((b) => toPem('X509 CRL', b.der)), readFileSync(join(caDir(), 'root.crl'), 'utf8')].join(''),
    );
    const verify = (cert: string, untrusted: string) =>
      openssl(['verify', '-crl_check_all', '-CRLfile', 'crls.pem', '-CAfile', join(caDir(), 'root.crt'), '-untrusted', untrusted, cert], tmp.dir);
    const old = await verify(join('dev-1', 'cert.pem'), 'old-issuing.pem');
    expect(old.ok, old.stdout + old.stderr).toBe(false);
    expect(old.stdout + old.stderr).toMatch(/error 23 at 1 depth lookup: certificate revoked/);

    // The successor issues; its certificates validate against the CRLs published now.
    const again = await cli('ca', 'issue', '--profile', 'mqtt-device', '--id', 'dev-1', '--generate-key', '--out', join(tmp.dir, 'dev-1-new'));
    expect(again.code, again.stderr).toBe(0);
    writeFileSync(join(tmp.dir, 'crls.pem'), readFileSync(join(caDir(), 'crl.pem')));
    const fresh = await verify(join('dev-1-new', 'cert.pem'), join('dev-1-new', 'chain.pem'));
    expect(fresh.stdout + fresh.stderr).toContain('dev-1-new/cert.pem: OK');

    // The revoked CA restored from the backup (over its successor): the daemon refuses to sign with it.
    for (const f of ['issuing-ec.crt', 'issuing-ec.key', 'issuing-ec.chain.pem']) copyFileSync(join(tmp.dir, `backup-${f}`), join(caDir(), f));
    const restored = start();
    expect(await outcome(restored)).toBe(78);
    expect(restored.stderr).toMatch(/the EC issuing CA .* is revoked; run edge-agent ca revoke-issuing --issuer ec again/);
    for (const f of ['issuing-ec.crt', 'issuing-ec.key', 'issuing-ec.chain.pem']) rmSync(join(caDir(), f));
    // Cut short at that point (the certificate moved away, no successor yet): running it again finishes the job.
    const finished = await cli('ca', 'revoke-issuing', '--issuer', 'ec', '--reason', 'cACompromise');
    expect(finished.code, finished.stderr).toBe(0);
    expect(finished.stdout).toContain('new issuing CA: O=Edge Agent, CN=gw-root Issuing CA EC 2');

    const after = start();
    const base = await after.ready();
    // The embedded broker's certificate came from the revoked CA: replaced at start, not presented again.
    expect(after.logs.find((l) => l.msg === 'local certificate replaced')).toMatchObject({
      profile: 'broker-server',
      reason: 'its issuing CA is no longer in use',
    });
    const chain = await (await fetch(`${base}/ca/chain`)).text();
    expect(chain).not.toContain(oldIssuing.trim().split('\n')[1]);
    expect(await (await fetch(`${base}/ca/crl`)).text()).toContain(readFileSync(join(caDir(), 'root.crl'), 'utf8'));
    await stop(after);
  }, 90_000); // four starts and seven commands
});
