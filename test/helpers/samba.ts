import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { testCa, type TestCa } from './testCa.js';
import { pollUntil } from './waiters.js';

const exec = promisify(execFile);
/** RFC 4515 for ldapsearch's filters, written here again: the helper checks the agent, it does not use its code. */
const ldapEscape = (v: string) => v.replace(/[*()\\\u0000]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

/**
 * Why the Samba AD DC tests are skipped here, or undefined when they run:
 * Samba's DC runs only as root. As root (CI) they always run, and a machine
 * without samba fails them instead of skipping them.
 */
export const sambaSkipReason: string | undefined =
  process.getuid?.() === 0 ? undefined : 'a Samba AD domain controller runs only as root (CI runs as root, where these tests must run)';
// Said where the tests skip, so that a reader of the output sees why (vitest shows only that they were skipped).
if (sambaSkipReason) console.warn(`Samba AD DC tests skipped: ${sambaSkipReason}`);

const REALM = 'PLANT.TEST';
const ADMIN_PASSWORD = 'Adm1n-Pass!x';
export const SERVICE_PASSWORD = 'Svc-Edge-Pass1!';
const SAMBA = existsSync('/usr/sbin/samba') ? '/usr/sbin/samba' : 'samba';

export interface SambaDc {
  /** ldaps://<address> (636); ldap://<address> (389) takes StartTLS. */
  url: string;
  address: string;
  /** The test CA that signed the DC's certificate (DNS:dc.plant.test and IP:<address>). */
  caFile: string;
  caPem: string;
  ca: TestCa;
  baseDn: string;
  realm: string;
  /** svc-edge, a plain user: in AD any user may search the directory. */
  serviceDn: string;
  servicePasswordFile: string;
  dir: string;
  /**
   * For reports, never asserted: the provisioning of the process' domain
   * (once), its copy and certificates for this DC, the start until the first LDAPS bind.
   */
  timings: { provisionMs: number; copyMs: number; startMs: number };
  addUser(name: string, password: string, options?: { upn?: string; displayName?: string }): Promise<string>;
  addGroup(name: string): Promise<string>;
  addMembers(group: string, names: string[]): Promise<void>;
  removeMembers(group: string, names: string[]): Promise<void>;
  disable(name: string): Promise<void>;
  enable(name: string): Promise<void>;
  /** accountExpires a day in the past. */
  expire(name: string): Promise<void>;
  setExpiry(name: string, at: Date): Promise<void>;
  /** Replaces one attribute of an account (uid, say) over LDAPS as the domain administrator. */
  setAttribute(name: string, attribute: string, value: string): Promise<void>;
  remove(name: string): Promise<void>;
  /** Sets a lockout threshold of 3 (for the whole domain) and binds with a wrong password until the DC says the account is locked (775). */
  lock(name: string): Promise<void>;
  /** The objectGUID of an account, as 32 hex digits, read with ldapsearch. */
  guidOf(name: string): Promise<string>;
  stop(): Promise<void>;
}

/**
 * One provisioned domain per process (samba-tool domain provision, ~6-13 s),
 * with svc-edge already in it; each DC copies it. Only smb.conf names the
 * directory (the ldb and tdb files hold no paths), so a copy with its own
 * smb.conf is a DC of its own. It is removed when the last DC using it
 * stops: vitest ends its workers with a signal, so an exit handler would
 * leave it behind.
 */
let template: Promise<{ dir: string; ms: number }> | undefined;
let users = 0;

/**
 * The suite's own directory (globalSetup makes it and removes it at the end; its test files are processes of
 * their own): the domain is provisioned there once for the whole suite, by the first file that needs it, and
 * the others copy it. Without it (a file run by itself outside the suite's setup) each process provisions its own.
 */
const SUITE_DIR = process.env.EDGE_TEST_SUITE_DIR;

async function suiteTemplate(suiteDir: string): Promise<{ dir: string; ms: number }> {
  const dir = join(suiteDir, 'samba-template');
  const lock = join(suiteDir, 'samba-template.lock');
  let mine = false;
  try {
    mkdirSync(lock);
    mine = true;
  } catch {
    // Another file provisions it: wait for the rename that says it is whole.
  }
  if (mine) {
    const made = await provisionTemplate();
    // smb.conf is the one file that names the directory: it names the final one before the rename makes it visible.
    const conf = join(made.dir, 'etc/smb.conf');
    writeFileSync(conf, readFileSync(conf, 'utf8').split(made.dir).join(dir));
    renameSync(made.dir, dir);
    return { dir, ms: made.ms };
  }
  const started = Date.now();
  await pollUntil(() => (existsSync(dir) ? true : undefined), {
    timeoutMs: 120_000,
    intervalMs: 200,
    message: () => `the suite's Samba domain never appeared in ${dir}`,
  });
  return { dir, ms: Date.now() - started };
}

async function releaseTemplate(): Promise<void> {
  users--;
  // The suite's template stays for the suite's other files; globalSetup removes it at the end.
  if (SUITE_DIR) return;
  if (users > 0 || !template) return;
  const pending = template;
  template = undefined;
  const made = await pending.catch(() => undefined);
  if (made) rmSync(made.dir, { recursive: true, force: true });
}

async function provisionTemplate(): Promise<{ dir: string; ms: number }> {
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'samba-template-'));
  await exec(
    'samba-tool',
    [
      'domain',
      'provision',
      '--use-rfc2307',
      `--realm=${REALM}`,
      '--domain=PLANT',
      '--server-role=dc',
      '--dns-backend=NONE',
      `--adminpass=${ADMIN_PASSWORD}`,
      `--targetdir=${dir}`,
      '--option=interfaces=127.0.60.254/8',
      '--option=bind interfaces only=yes',
    ],
    { maxBuffer: 16 << 20 },
  );
  await exec('samba-tool', ['user', 'create', 'svc-edge', SERVICE_PASSWORD, '-H', join(dir, 'private/sam.ldb')]);
  return { dir, ms: Date.now() - started };
}

/** smb.conf of a copy: the template's, with its own paths, address, the LDAP service alone and the test CA's certificate. */
function configFor(templateDir: string, dir: string, address: string): string {
  const global = [
    `interfaces = ${address}/8`,
    'server services = ldap',
    `log file = ${join(dir, 'log.%m')}`,
    `pid directory = ${join(dir, 'run')}`,
    `ncalrpc dir = ${join(dir, 'ncalrpc')}`,
    'tls enabled = yes',
    `tls certfile = ${join(dir, 'tls/cert.pem')}`,
    `tls keyfile = ${join(dir, 'tls/key.pem')}`,
    `tls cafile = ${join(dir, 'tls/ca.pem')}`,
  ];
  const kept = readFileSync(join(templateDir, 'etc/smb.conf'), 'utf8')
    .split(templateDir)
    .join(dir)
    .split('\n')
    .filter((line) => !/^\s*(interfaces|server services|log file)\s*=/.test(line));
  const at = kept.findIndex((line) => line.trim() === '[global]');
  kept.splice(at + 1, 0, ...global.map((l) => `\t${l}`));
  return kept.join('\n');
}

/** A Samba AD DC of its own on `address` (127.0.60.N: one per test file), answering LDAPS and StartTLS with a certificate of the test CA. */
export async function startSambaDc(options: { address: string }): Promise<SambaDc> {
  const { address } = options;
  if (!/^127\.\d+\.\d+\.\d+$/.test(address)) throw new Error(`a test DC listens on loopback only, not ${address}`);
  template ??= SUITE_DIR ? suiteTemplate(SUITE_DIR) : provisionTemplate();
  users++;
  const tpl = await template.catch(async (err: unknown) => {
    await releaseTemplate();
    throw err;
  });
  const copyStarted = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'samba-dc-'));
  const servicePasswordFile = join(dir, 'svc-edge.password');
  let ca: TestCa;
  try {
    await exec('cp', ['-a', `${tpl.dir}/.`, dir]);
    for (const sub of ['run', 'ncalrpc']) mkdirSync(join(dir, sub), { recursive: true });
    ca = await testCa(join(dir, 'tls'), 'Samba test CA');
    await ca.issue('cert.pem', 'key.pem', ['DNS:dc.plant.test', `IP:${address}`]);
    writeFileSync(join(dir, 'etc/smb.conf'), configFor(tpl.dir, dir, address));
    writeFileSync(servicePasswordFile, `${SERVICE_PASSWORD}\n`, { mode: 0o600 });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    await releaseTemplate();
    throw err;
  }
  const copyMs = Date.now() - copyStarted;

  const started = Date.now();
  const out = openSync(join(dir, 'samba.out'), 'a');
  const child: ChildProcess = spawn(SAMBA, ['-s', join(dir, 'etc/smb.conf'), '-i', '-M', 'single'], { stdio: ['ignore', out, out] });
  closeSync(out);
  let exited: string | undefined;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = `samba exited (${code ?? signal})`;
      resolve();
    }),
  );
  child.once('error', (err) => {
    exited = `samba could not start: ${err.message}`;
  });
  const sam = ['-H', join(dir, 'private/sam.ldb')];
  const tool = async (...args: string[]) => {
    await exec('samba-tool', [...args, ...sam]);
  };
  const ldapEnv = { ...process.env, LDAPTLS_CACERT: ca.caFile, LDAPTLS_REQCERT: 'demand' };
  const url = `ldaps://${address}`;
  const baseDn = 'DC=plant,DC=test';
  const ldapsearch = (bindDn: string, password: string, filter: string, ...attrs: string[]) =>
    exec('ldapsearch', ['-LLL', '-x', '-o', 'ldif-wrap=no', '-H', url, '-D', bindDn, '-w', password, '-b', baseDn, filter, ...attrs], { env: ldapEnv });
  const ldapmodify = async (ldif: string) => {
    const run = exec('ldapmodify', ['-x', '-H', url, '-D', `Administrator@${REALM}`, '-w', ADMIN_PASSWORD], { env: ldapEnv });
    run.child.stdin?.end(ldif);
    await run;
  };
  const dnOf = async (name: string) => {
    const { stdout } = await ldapsearch(`svc-edge@${REALM}`, SERVICE_PASSWORD, `(sAMAccountName=${ldapEscape(name)})`, 'dn');
    // LDIF gives a DN that is not ASCII in base64 (dn:: ...).
    const line = /^dn(:?): (.*)$/m.exec(stdout);
    const dn = line?.[1] === ':' ? Buffer.from(line[2] ?? '', 'base64').toString('utf8') : line?.[2];
    if (!dn) throw new Error(`no account ${name} in the test DC`);
    return dn;
  };
  const setExpiry = async (name: string, at: Date) => {
    const ticks = BigInt(at.getTime()) * 10_000n + 116_444_736_000_000_000n;
    await ldapmodify(`dn: ${await dnOf(name)}\nchangetype: modify\nreplace: accountExpires\naccountExpires: ${ticks}\n`);
  };
  let lockoutSet = false;

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (!exited) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exit;
      clearTimeout(killer);
    }
    rmSync(dir, { recursive: true, force: true });
    await releaseTemplate();
  };

  try {
    await pollUntil(
      async () => {
        if (exited) throw new Error(exited);
        await ldapsearch(`svc-edge@${REALM}`, SERVICE_PASSWORD, '(sAMAccountName=svc-edge)', 'dn');
        return true;
      },
      {
        timeoutMs: 90_000,
        intervalMs: 200,
        message: () =>
          `the Samba DC on ${address} did not answer LDAPS within 90 s: ${exited ?? ''}\n${readFileSync(join(dir, 'samba.out'), 'utf8').slice(-2000)}`,
      },
    );
  } catch (err) {
    await stop();
    throw err;
  }
  const startMs = Date.now() - started;

  return {
    url,
    address,
    caFile: ca.caFile,
    caPem: readFileSync(ca.caFile, 'utf8'),
    ca,
    baseDn,
    realm: REALM,
    serviceDn: `CN=svc-edge,CN=Users,${baseDn}`,
    servicePasswordFile,
    dir,
    timings: { provisionMs: tpl.ms, copyMs, startMs },
    async addUser(name, password, o = {}) {
      // samba-tool gives every user the UPN name@realm; another one is set over LDAP.
      await tool('user', 'create', name, password);
      const dn = await dnOf(name);
      const changes = [
        ...(o.upn ? [`replace: userPrincipalName\nuserPrincipalName: ${o.upn}`] : []),
        ...(o.displayName ? [`replace: displayName\ndisplayName: ${o.displayName}`] : []),
      ];
      if (changes.length > 0) await ldapmodify(`dn: ${dn}\nchangetype: modify\n${changes.join('\n-\n')}\n`);
      return dn;
    },
    async addGroup(name) {
      await tool('group', 'add', name);
      return dnOf(name);
    },
    addMembers: (group, names) => tool('group', 'addmembers', group, names.join(',')),
    removeMembers: (group, names) => tool('group', 'removemembers', group, names.join(',')),
    disable: (name) => tool('user', 'disable', name),
    enable: (name) => tool('user', 'enable', name),
    expire: (name) => setExpiry(name, new Date(Date.now() - 86_400_000)),
    setExpiry,
    async setAttribute(name, attribute, value) {
      await ldapmodify(`dn: ${await dnOf(name)}\nchangetype: modify\nreplace: ${attribute}\n${attribute}: ${value}\n`);
    },
    remove: (name) => tool('user', 'delete', name),
    async lock(name) {
      if (!lockoutSet) await tool('domain', 'passwordsettings', 'set', '--account-lockout-threshold=3');
      lockoutSet = true;
      await pollUntil(
        async () => {
          const failed = await ldapsearch(`${name}@${REALM}`, 'Wrong-Pass9!', '(sAMAccountName=none)', 'dn').then(
            () => '',
            (err: { stderr?: string }) => err.stderr ?? '',
          );
          return /data 775/.test(failed) ? true : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 10, message: () => `${name} did not get locked out` },
      );
    },
    async guidOf(name) {
      const { stdout } = await ldapsearch(`svc-edge@${REALM}`, SERVICE_PASSWORD, `(sAMAccountName=${ldapEscape(name)})`, 'objectGUID');
      const b64 = /^objectGUID:: (.*)$/m.exec(stdout)?.[1];
      if (!b64) throw new Error(`no objectGUID for ${name}`);
      return Buffer.from(b64, 'base64').toString('hex');
    },
    stop,
  };
}
