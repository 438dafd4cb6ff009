import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** A CA made by the openssl command line, independent of the agent's own CA code, that issues TLS server certificates. */
export interface TestCa {
  dir: string;
  caFile: string;
  /** Writes `certFile` and `keyFile` (mode 0600) in `dir`: a server certificate with these subjectAltNames (`DNS:x`, `IP:a.b.c.d`). */
  issue(certFile: string, keyFile: string, altNames: string[]): Promise<{ certPath: string; keyPath: string }>;
}

export async function testCa(dir: string, name: string): Promise<TestCa> {
  mkdirSync(dir, { recursive: true });
  const caFile = join(dir, 'ca.pem');
  const caKey = join(dir, 'ca.key');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await exec('openssl', [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    caKey,
    '-out',
    caFile,
    '-subj',
    `/CN=${name}`,
    '-days',
    '2',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  chmodSync(caKey, 0o600);
  let serial = 1;
  return {
    dir,
    caFile,
    async issue(certFile, keyFile, altNames) {
      const certPath = join(dir, certFile);
      const keyPath = join(dir, keyFile);
      const csr = join(dir, `${certFile}.csr`);
      const ext = join(dir, `${certFile}.ext`);
      const cn = altNames.find((n) => n.startsWith('DNS:'))?.slice(4) ?? 'server';
      await exec('openssl', ['req', '-new', ...ec, '-keyout', keyPath, '-out', csr, '-subj', `/CN=${cn}`]);
      chmodSync(keyPath, 0o600);
      writeFileSync(ext, `subjectAltName=${altNames.join(',')}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n`);
      await exec('openssl', [
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        caFile,
        '-CAkey',
        caKey,
        '-set_serial',
        String(serial++),
        '-days',
        '2',
        '-out',
        certPath,
        '-extfile',
        ext,
      ]);
      return { certPath, keyPath };
    },
  };
}
