import { chmodSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { openssl, opensslCsr } from '../../helpers/openssl.js';

describe('the CA inside the daemon', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemons: Daemon[];
  let config: string;
  const env = { EDGE_AGENT_CA_PASSPHRASE: 'plant-floor-secret' };
  beforeEach(() => {
    tmp = tempDir();
    daemons = [];
    config = writeConfig(tmp.dir);
  });
  afterEach(async () => {
    for (const d of daemons) await d.dispose();
    tmp.cleanup();
  });
  const start = (e: NodeJS.ProcessEnv = env) => {
    const d = Daemon.start(config, { env: e });
    daemons.push(d);
    return d;
  };
  const caDir = () => join(tmp.dir, 'data', 'ca');

  it('creates an encrypted CA at first start, serves the chain and a CRL that follows revocations made with the CLI', async () => {
    const d = start();
    const base = await d.ready();
    const keys = readdirSync(caDir()).filter((f) => f.endsWith('.key'));
    expect(keys.sort()).toEqual(['issuing-ec.key', 'issuing-rsa.key', 'root.key']);
    for (const k of keys) {
      expect(statSync(join(caDir(), k)).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(caDir(), k), 'utf8')).toContain('BEGIN ENCRYPTED PRIVATE KEY');
    }
    expect(statSync(caDir()).mode & 0o777).toBe(0o700);
    expect(JSON.stringify(d.logs)).not.toContain('plant-floor-secret');

    const chain = await (await fetch(`${base}/ca/chain`)).text();
    expect(chain.match(/BEGIN CERTIFICATE/g)).toHaveLength(3);
    writeFileSync(join(tmp.dir, 'chain.pem'), chain);

    await opensslCsr(tmp.dir, 'dev', 'ec-p256');
    const issued = await runCli(
      [
        'ca',
        'issue',
        '--profile',
        'mqtt-device',
        '--id',
        'meter-9',
        '--csr',
        join(tmp.dir, 'dev.csr'),
        '--out',
        join(tmp.dir, 'dev.crt'),
        '--json',
        '--config',
        config,
      ],
      { env },
    );
    expect(issued.code, issued.stderr).toBe(0);
    const serial = (JSON.parse(issued.stdout) as { serial: string }).serial;
    const verify = () =>
      openssl(['verify', '-crl_check', '-CRLfile', 'served-crl.pem', '-CAfile', join(caDir(), 'root.crt'), '-untrusted', 'chain.pem', 'dev.crt'], tmp.dir);

    writeFileSync(join(tmp.dir, 'served-crl.pem'), await (await fetch(`${base}/ca/crl`)).text());
    expect((await verify()).stdout).toContain('dev.crt: OK');
    // The root's own CRL is served too: openssl finds a valid CRL for every CA of the chain (what OPC UA stacks insist on).
    const all = await openssl(
      ['verify', '-crl_check_all', '-CRLfile', 'served-crl.pem', '-CAfile', join(caDir(), 'root.crt'), '-untrusted', 'chain.pem', 'dev.crt'],
      tmp.dir,
    );
    expect(all.stdout + all.stderr).toContain('dev.crt: OK');

    const revoked = await runCli(['ca', 'revoke', '--id', 'meter-9', '--profile', 'mqtt-device', '--reason', 'keyCompromise', '--config', config], { env });
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toContain(`revoked ${serial}`);
    writeFileSync(join(tmp.dir, 'served-crl.pem'), await (await fetch(`${base}/ca/crl`)).text());
    const after = await verify();
    expect(after.ok).toBe(false);
    expect(after.stdout + after.stderr).toContain('certificate revoked');

    // The daemon's own certificates (the embedded broker's, the agent's client identity) are in the list too.
    const list = (
      JSON.parse((await runCli(['ca', 'list', '--json', '--config', config], { env })).stdout) as { serial: string; status: string; profile: string }[]
    ).filter((c) => c.profile !== 'broker-server' && c.profile !== 'agent-client');
    expect(list).toEqual([expect.objectContaining({ serial, status: 'revoked' })]);
    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(0);
  }, 60_000); // keys encrypted with PBKDF2 at 600,000 iterations: each start and command reads them

  it('refuses to start when a CA key is readable by others, with a wrong passphrase, or with none; starts with a systemd credential', async () => {
    const first = start();
    await first.ready();
    first.kill('SIGTERM');
    await first.exited;

    chmodSync(join(caDir(), 'issuing-ec.key'), 0o644);
    const exposed = start();
    expect((await exposed.exited).code).toBe(78);
    expect(exposed.stderr).toContain(`CA key ${join(caDir(), 'issuing-ec.key')} has mode 0644: group or others can access it`);
    chmodSync(join(caDir(), 'issuing-ec.key'), 0o600);

    const wrong = start({ EDGE_AGENT_CA_PASSPHRASE: 'not-it' });
    expect((await wrong.exited).code).toBe(78);
    expect(wrong.stderr).toMatch(/could not be decrypted: the passphrase is wrong/);
    expect(wrong.stderr).not.toContain('not-it');

    const none = start({});
    expect((await none.exited).code).toBe(78);
    expect(none.stderr).toContain('is encrypted and no passphrase is configured');

    const credentials = join(tmp.dir, 'credentials');
    mkdirSync(credentials);
    writeFileSync(join(credentials, 'ca-passphrase'), 'plant-floor-secret\n', { mode: 0o600 });
    const viaSystemd = start({ CREDENTIALS_DIRECTORY: credentials });
    await viaSystemd.ready();
    viaSystemd.kill('SIGTERM');
    expect((await viaSystemd.exited).code).toBe(0);

    // A PKCS#12 passphrase that is too short is refused before anything is issued.
    writeFileSync(join(tmp.dir, 'short-pass'), 'short\n');
    const p12 = await runCli(
      [
        'ca',
        'issue',
        '--profile',
        'agent-client',
        '--id',
        'hmi-9',
        '--generate-key',
        '--key-type',
        'rsa-2048',
        '--out',
        join(tmp.dir, 'hmi'),
        '--p12',
        '--p12-passphrase-file',
        join(tmp.dir, 'short-pass'),
        '--config',
        config,
      ],
      { env },
    );
    expect(p12.code).toBe(64);
    expect(p12.stderr).toContain('at least 8 characters');
    const issued = JSON.parse((await runCli(['ca', 'list', '--json', '--config', config], { env })).stdout) as { profile: string }[];
    expect(issued.filter((c) => c.profile !== 'broker-server' && c.profile !== 'agent-client')).toEqual([]);

    const cliWrong = await runCli(['ca', 'status', '--config', config]);
    expect(cliWrong.code).toBe(0); // status reads certificates only: no passphrase needed
    const cliIssue = await runCli(['ca', 'issue', '--profile', 'mqtt-device', '--id', 'x', '--generate-key', '--out', join(tmp.dir, 'x'), '--config', config], {
      env: { EDGE_AGENT_CA_PASSPHRASE: 'nope' },
    });
    expect(cliIssue.code).toBe(1);
    expect(cliIssue.stderr).toContain('CA_PASSPHRASE_WRONG');
  }, 90_000); // six starts, each reading passphrase-encrypted keys (PBKDF2 at 600,000 iterations)

  it('encrypts keys made without a passphrase with ca passphrase, and changes nothing with a wrong current one', async () => {
    const plain = start({});
    await plain.ready();
    expect(plain.logs.some((l) => l.msg.startsWith('CA keys are stored unencrypted'))).toBe(true);
    plain.kill('SIGTERM');
    await plain.exited;
    writeFileSync(join(tmp.dir, 'new-pass'), 'a-long-plant-passphrase\n', { mode: 0o600 });
    const rekey = await runCli(['ca', 'passphrase', '--new-passphrase-file', join(tmp.dir, 'new-pass'), '--config', config, '--json']);
    expect(rekey.code, rekey.stderr).toBe(0);
    expect((JSON.parse(rekey.stdout) as { files: string[] }).files).toHaveLength(3);
    const keys = readdirSync(caDir()).filter((f) => f.endsWith('.key'));
    for (const k of keys) {
      expect(readFileSync(join(caDir(), k), 'utf8')).toContain('BEGIN ENCRYPTED PRIVATE KEY');
      expect(statSync(join(caDir(), k)).mode & 0o777).toBe(0o600);
    }
    const snapshot = keys.map((k) => readFileSync(join(caDir(), k), 'utf8'));
    const wrong = await runCli(['ca', 'passphrase', '--unencrypted', '--config', config], { env: { EDGE_AGENT_CA_PASSPHRASE: 'not-the-one' } });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('CA_PASSPHRASE_WRONG');
    expect(keys.map((k) => readFileSync(join(caDir(), k), 'utf8'))).toEqual(snapshot);

    const encrypted = start({ EDGE_AGENT_CA_PASSPHRASE: 'a-long-plant-passphrase' });
    await encrypted.ready();
    expect(encrypted.logs.some((l) => l.msg.includes('unencrypted'))).toBe(false);
    encrypted.kill('SIGTERM');
    expect((await encrypted.exited).code).toBe(0);
  });
});
