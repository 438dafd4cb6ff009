import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runCli, tempDir } from '../../helpers/daemon.js';
import { openssl, opensslCsr } from '../../helpers/openssl.js';

const CA_CONF = `
[ ca ]
default_ca = enterprise
[ enterprise ]
dir = .
database = index.txt
new_certs_dir = .
serial = serial.txt
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[ any ]
commonName = supplied
organizationName = optional
[ v3_int ]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

/** An enterprise PKI made with openssl alone: a root, and `openssl ca` to sign our intermediate's CSR. */
async function enterprise(dir: string, rootOptions: { days?: number; pathlen?: number } = {}) {
  writeFileSync(join(dir, 'ca.cnf'), CA_CONF);
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial.txt'), '1000\n');
  const root = await openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'ent.key',
      '-subj',
      '/O=Enterprise/CN=Enterprise Root',
      '-days',
      String(rootOptions.days ?? 3650),
      '-out',
      'ent.crt',
      '-addext',
      `basicConstraints=critical,CA:TRUE${rootOptions.pathlen === undefined ? '' : `,pathlen:${rootOptions.pathlen}`}`,
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  if (!root.ok) throw new Error(root.stderr);
  return async (csr: string, out: string, dates: string[] = ['-days', '365']) => {
    const r = await openssl(
      ['ca', '-batch', '-config', 'ca.cnf', '-cert', 'ent.crt', '-keyfile', 'ent.key', '-in', csr, '-out', out, '-extensions', 'v3_int', '-notext', ...dates],
      dir,
    );
    if (!r.ok) throw new Error(r.stderr);
  };
}

describe('chaining to an enterprise PKI', () => {
  let tmp: ReturnType<typeof tempDir>;
  let config: string;
  beforeEach(() => {
    tmp = tempDir();
    config = join(tmp.dir, 'agent.yaml');
    writeFileSync(config, `agent:\n  id: gw-ent\n  dataDir: ${join(tmp.dir, 'data')}\nca:\n  autoInit: false\n  passphrase: correct-horse\n`);
  });
  afterEach(() => tmp.cleanup());

  const cli = (...args: string[]) => runCli([...args, '--config', config]);

  it('writes a CSR for the issuing CA, imports the signed certificate, and issues leaves that chain to the enterprise root', async () => {
    const sign = await enterprise(tmp.dir);
    const request = await cli('ca', 'request-intermediate', '--issuer', 'ec', '--out', join(tmp.dir, 'int.csr'));
    expect(request.code, request.stderr).toBe(0);
    expect(request.stdout).toContain('BEGIN CERTIFICATE REQUEST');
    const reqText = await openssl(['req', '-in', 'int.csr', '-noout', '-text', '-verify'], tmp.dir);
    expect(reqText.stdout + reqText.stderr).toMatch(/verify OK|Certificate request self-signature verify OK/);
    expect(reqText.stdout).toMatch(/CA:TRUE, pathlen:0/);
    await sign('int.csr', 'int.crt');

    const imported = await cli('ca', 'import-intermediate', join(tmp.dir, 'int.crt'), '--chain', join(tmp.dir, 'ent.crt'), '--issuer', 'ec', '--json');
    expect(imported.code, imported.stderr).toBe(0);
    expect(JSON.parse(imported.stdout).subject).toContain('gw-ent Issuing CA EC');

    await opensslCsr(tmp.dir, 'dev', 'ec-p256');
    const issued = await cli(
      'ca',
      'issue',
      '--profile',
      'mqtt-device',
      '--id',
      'dev-1',
      '--csr',
      join(tmp.dir, 'dev.csr'),
      '--out',
      join(tmp.dir, 'dev-bundle.pem'),
    );
    expect(issued.code, issued.stderr).toBe(0);
    const bundle = readFileSync(join(tmp.dir, 'dev-bundle.pem'), 'utf8');
    const [leaf, ...chain] = bundle.split(/(?=-----BEGIN CERTIFICATE-----)/);
    writeFileSync(join(tmp.dir, 'leaf.pem'), leaf!);
    writeFileSync(join(tmp.dir, 'untrusted.pem'), chain.join(''));
    const verify = await openssl(['verify', '-CAfile', 'ent.crt', '-untrusted', 'untrusted.pem', 'leaf.pem'], tmp.dir);
    expect(verify.stdout.trim(), verify.stderr).toBe('leaf.pem: OK');

    const status = JSON.parse((await cli('ca', 'status', '--json')).stdout) as { role: string; chain?: string[] }[];
    expect(status.find((s) => s.role === 'issuing-ec')?.chain).toEqual(['O=Enterprise, CN=Enterprise Root']);
  });

  it('refuses a certificate that does not match the pending key, and one that has expired, installing nothing', async () => {
    const sign = await enterprise(tmp.dir);
    expect((await cli('ca', 'request-intermediate', '--issuer', 'ec')).code).toBe(0);
    const ours = join(tmp.dir, 'data', 'ca', 'issuing-ec.csr');

    await opensslCsr(tmp.dir, 'other', 'ec-p256');
    await sign('other.csr', 'other.crt');
    const mismatch = await cli('ca', 'import-intermediate', join(tmp.dir, 'other.crt'), '--chain', join(tmp.dir, 'ent.crt'));
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toContain('INTERMEDIATE_INVALID: the certificate does not match the key');

    await sign(ours, 'expired.crt', ['-startdate', '20200101000000Z', '-enddate', '20210101000000Z']);
    const expired = await cli('ca', 'import-intermediate', join(tmp.dir, 'expired.crt'), '--chain', join(tmp.dir, 'ent.crt'));
    expect(expired.code).toBe(1);
    expect(expired.stderr).toContain('INTERMEDIATE_INVALID: the certificate expired on 2021-01-01');

    await sign(ours, 'good.crt');
    const wrongChain = await cli('ca', 'import-intermediate', join(tmp.dir, 'good.crt'), '--chain', join(tmp.dir, 'other.crt'));
    expect(wrongChain.code).toBe(1);
    expect(wrongChain.stderr).toMatch(/INTERMEDIATE_INVALID: imported intermediate: certificate 1 of the chain .* is not signed by the next one/);

    const status = JSON.parse((await cli('ca', 'status', '--json')).stdout) as unknown[];
    expect(status).toEqual([]);
    const issue = await cli('ca', 'issue', '--profile', 'mqtt-device', '--id', 'x', '--generate-key', '--out', join(tmp.dir, 'x'));
    expect(issue.code).toBe(1);
    expect(issue.stderr).toContain('CA_NOT_INITIALISED');
  });

  it('refuses an intermediate under a root whose path length forbids it', async () => {
    const sign = await enterprise(tmp.dir, { pathlen: 0 });
    expect((await cli('ca', 'request-intermediate', '--issuer', 'ec', '--out', join(tmp.dir, 'int.csr'))).code).toBe(0);
    await sign('int.csr', 'int.crt');
    const refused = await cli('ca', 'import-intermediate', join(tmp.dir, 'int.crt'), '--chain', join(tmp.dir, 'ent.crt'));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('Enterprise Root allows a path length of 0, but 1 CA certificate(s) would sit below it');
  });

  it('never issues past the enterprise root, even when the intermediate was signed for longer', async () => {
    const sign = await enterprise(tmp.dir, { days: 30 });
    expect((await cli('ca', 'request-intermediate', '--issuer', 'ec', '--out', join(tmp.dir, 'int.csr'))).code).toBe(0);
    await sign('int.csr', 'int.crt', ['-days', '3000']);
    expect((await cli('ca', 'import-intermediate', join(tmp.dir, 'int.crt'), '--chain', join(tmp.dir, 'ent.crt'))).code).toBe(0);
    await opensslCsr(tmp.dir, 'dev', 'ec-p256');
    const issued = await cli('ca', 'issue', '--profile', 'mqtt-device', '--id', 'dev-2', '--csr', join(tmp.dir, 'dev.csr'), '--json');
    expect(issued.code, issued.stderr).toBe(0);
    const leafEnd = new Date((JSON.parse(issued.stdout) as { notAfter: string }).notAfter);
    const rootEnd = await openssl(['x509', '-in', 'ent.crt', '-noout', '-enddate'], tmp.dir);
    const rootNotAfter = new Date(rootEnd.stdout.trim().replace('notAfter=', ''));
    expect(leafEnd.getTime()).toBeLessThanOrEqual(rootNotAfter.getTime());
    expect(leafEnd.getTime()).toBeGreaterThan(Date.now() + 29 * 86_400_000);
  });
});
