import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LdapConnection } from '../../agent/transport/ldap.js';

const exec = promisify(execFile);

const REALM = 'PLANT.TEST';
const ADMIN_PASSWORD = 'Adm1n-Pass!x';
const SERVICE_PASSWORD = 'Svc-Edge-Pass1!';
const SAMBA = '/usr/sbin/samba';

/** Why the directory bench cannot run here, or undefined when it can: Samba's DC runs only as root, and only where it is installed. */
export function sambaDcUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'a Samba AD domain controller runs only as root';
  if (!existsSync(SAMBA)) return `samba is not installed (${SAMBA})`;
  return undefined;
}

/** A bench's own Samba AD DC, answering LDAPS only, with a certificate of a CA of its own that names its loopback address. */
export interface BenchDc {
  url: string;
  baseDn: string;
  caFile: string;
  caPem: string;
  /** svc-edge: a plain user (in AD any user may search the directory). */
  serviceDn: string;
  servicePassword: string;
  servicePasswordFile: string;
  stop(): Promise<void>;
}

/** An EC P-256 CA and a server certificate for `address`, made by the openssl command line (the agent's own CA code stays out of the bench's DC). */
async function certificates(dir: string, address: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const at = (f: string) => join(dir, f);
  const caExt = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'];
  await exec('openssl', ['req', '-x509', ...ec, '-keyout', at('ca.key'), '-out', at('ca.pem'), '-subj', '/CN=Bench DC CA', '-days', '2', ...caExt]);
  await exec('openssl', ['req', '-new', ...ec, '-keyout', at('key.pem'), '-out', at('cert.csr'), '-subj', '/CN=dc.plant.test']);
  writeFileSync(at('cert.ext'), `subjectAltName=DNS:dc.plant.test,IP:${address}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n`);
  const sign = ['-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-set_serial', '1', '-days', '2', '-extfile', at('cert.ext')];
  await exec('openssl', ['x509', '-req', '-in', at('cert.csr'), ...sign, '-out', at('cert.pem')]);
}

/**
 * Provisions a domain in a temp directory (~10-15 s), runs `setup` on its
 * sam.ldb before the DC starts (samba-tool works offline: no wait for the
 * DC to add users), then starts `samba` in the foreground, the LDAP service
 * alone, on `address` (loopback only) and waits for an LDAPS bind.
 */
export async function startBenchDc(address: string, setup: (tool: (...args: string[]) => Promise<void>) => Promise<void>): Promise<BenchDc> {
  if (!/^127\.\d+\.\d+\.\d+$/.test(address)) throw new Error(`the bench's DC listens on loopback only, not ${address}`);
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-dc-'));
  let child: ChildProcess | undefined;
  let exited: string | undefined;
  let exit: Promise<void> = Promise.resolve();
  const stop = async () => {
    if (child && !exited) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child?.kill('SIGKILL'), 10_000);
      await exit;
      clearTimeout(killer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const provision = ['domain', 'provision', '--use-rfc2307', `--realm=${REALM}`, '--domain=PLANT', '--server-role=dc', '--dns-backend=NONE'];
    await exec('samba-tool', [...provision, `--adminpass=${ADMIN_PASSWORD}`, `--targetdir=${dir}`, `--option=interfaces=${address}/8`], {
      maxBuffer: 16 << 20,
    });
    const tool = async (...args: string[]) => {
      await exec('samba-tool', [...args, '-H', join(dir, 'private/sam.ldb')]);
    };
    await tool('user', 'create', 'svc-edge', SERVICE_PASSWORD);
    await setup(tool);
    await certificates(join(dir, 'tls'), address);
    const global = [
      'bind interfaces only = yes',
      'server services = ldap',
      `log file = ${join(dir, 'log.%m')}`,
      `pid directory = ${join(dir, 'run')}`,
      `ncalrpc dir = ${join(dir, 'ncalrpc')}`,
      'tls enabled = yes',
      `tls certfile = ${join(dir, 'tls/cert.pem')}`,
      `tls keyfile = ${join(dir, 'tls/key.pem')}`,
      `tls cafile = ${join(dir, 'tls/ca.pem')}`,
    ];
    const conf = join(dir, 'etc/smb.conf');
    const lines = readFileSync(conf, 'utf8')
      .split('\n')
      .filter((line) => !/^\s*(server services|log file|bind interfaces only)\s*=/.test(line));
    lines.splice(lines.findIndex((l) => l.trim() === '[global]') + 1, 0, ...global.map((l) => `\t${l}`));
    writeFileSync(conf, lines.join('\n'));
    for (const sub of ['run', 'ncalrpc']) mkdirSync(join(dir, sub), { recursive: true });
    const servicePasswordFile = join(dir, 'svc-edge.password');
    writeFileSync(servicePasswordFile, `${SERVICE_PASSWORD}\n`, { mode: 0o600 });

    const out = openSync(join(dir, 'samba.out'), 'a');
    const started = spawn(SAMBA, ['-s', conf, '-i', '-M', 'single'], { stdio: ['ignore', out, out] });
    child = started;
    exit = new Promise<void>((resolve) =>
      started.once('exit', (code, signal) => {
        exited = `samba exited (${code ?? signal})`;
        resolve();
      }),
    );
    started.once('error', (err) => {
      exited = `samba could not start: ${err.message}`;
    });
    const url = `ldaps://${address}`;
    const baseDn = 'DC=plant,DC=test';
    const serviceDn = `CN=svc-edge,CN=Users,${baseDn}`;
    const caFile = join(dir, 'tls/ca.pem');
    const caPem = readFileSync(caFile, 'utf8');
    for (const deadline = Date.now() + 90_000; ; ) {
      if (exited) throw new Error(`${exited}: ${readFileSync(join(dir, 'samba.out'), 'utf8').slice(-1000)}`);
      try {
        const c = await LdapConnection.open(url, { caPem, connectTimeoutMs: 2000, timeoutMs: 2000 });
        try {
          await c.bind(serviceDn, SERVICE_PASSWORD);
        } finally {
          await c.close();
        }
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`the bench's DC on ${address} did not answer LDAPS within 90 s`, { cause: err });
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    return { url, baseDn, caFile, caPem, serviceDn, servicePassword: SERVICE_PASSWORD, servicePasswordFile, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
