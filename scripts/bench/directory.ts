import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ACCOUNT_ATTRIBUTES } from '../../agent/directory/accountEntry.js';
import { LdapConnection, type LdapOptions } from '../../agent/transport/ldap.js';
import type { BenchResult } from './result.js';
import { type BenchDc, sambaDcUnavailable, startBenchDc } from './sambaDc.js';

const ADDRESS = '127.0.60.9';
const LOGINS = 200;
const REQUESTS = 2_000;
const CONCURRENCY = 8;
const USER = 'bench1';
/** Logs in once, for the request rates: GET /api/v1/me lists the caller's latest 50 audit entries, and USER's 200 logins would fill them. */
const READER = 'bench2';
const PASSWORD = 'Bench-Pass1!x';
const GROUP = 'Bench-Technicians';
const IN_CHAIN = '1.2.840.113556.1.4.1941';
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;

/** One HTTP exchange on `agent`; the status and the body text. */
function call(agent: Agent, port: number, method: string, path: string, options: { token?: string; body?: unknown } = {}) {
  return new Promise<{ status: number; text: string }>((ok, fail) => {
    const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    const headers: Record<string, string> = {};
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    if (payload) Object.assign(headers, { 'content-type': 'application/json', 'content-length': String(payload.length) });
    const req = request({ host: '127.0.0.1', port, method, path, agent, headers }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => ok({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', fail);
    req.end(payload);
  });
}

/** `REQUESTS` GETs of /api/v1/me with `token` on keep-alive connections, `CONCURRENCY` at a time; answers per second. */
async function meRate(port: number, token: string): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < REQUESTS; i = next++) {
      const r = await call(agent, port, 'GET', '/api/v1/me', { token });
      if (r.status !== 200) throw new Error(`GET /api/v1/me: ${r.status} ${r.text}`);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  return REQUESTS / seconds;
}

/** The LDAP work of one directory login, without the daemon: connect, service bind, user search; connect, user bind; group search (nested). */
async function rawLogin(dc: BenchDc, options: LdapOptions): Promise<void> {
  const search = await LdapConnection.open(dc.url, options);
  try {
    await search.bind(dc.serviceDn, dc.servicePassword);
    const filter = `(&(objectCategory=person)(objectClass=user)(|(sAMAccountName=${USER})(userPrincipalName=${USER})))`;
    const [entry] = await search.search(dc.baseDn, filter, ACCOUNT_ATTRIBUTES, { sizeLimit: 2 });
    if (!entry) throw new Error(`no ${USER} in the bench's DC`);
    const check = await LdapConnection.open(dc.url, options);
    try {
      await check.bind(entry.dn, PASSWORD);
    } finally {
      await check.close();
    }
    const groups = await search.search(dc.baseDn, `(&(objectClass=group)(member:${IN_CHAIN}:=${entry.dn}))`, ['distinguishedName', 'sAMAccountName']);
    if (groups.length === 0) throw new Error(`${USER} is in no group`);
  } finally {
    await search.close();
  }
}

const ms = (v: number) => v.toFixed(1);

/**
 * Directory logins against a real Active Directory (a Samba AD DC started
 * here on 127.0.60.9) through the real daemon, next to the same LDAP work
 * done directly with the agent's LDAP wrapper in the same run (interleaved,
 * one of each per round): what the daemon adds to a login. Then requests
 * with a directory session's token next to a local API token's (the
 * admin.token of the daemon) on GET /api/v1/me: what a directory session
 * costs per request. /me lists the caller's latest audit entries, so the
 * session measured is that of a user who logged in once (one entry).
 */
export async function directoryBench(): Promise<BenchResult[]> {
  const why = sambaDcUnavailable();
  if (why) return [{ name: 'directory: skipped', value: 0, unit: '', limit: why }];
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-directory-'));
  const dataDir = join(dir, 'data');
  let dc: BenchDc | undefined;
  let daemon: ChildProcess | undefined;
  const http = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    dc = await startBenchDc(ADDRESS, async (tool) => {
      await tool('group', 'add', GROUP);
      await tool('user', 'create', USER, PASSWORD);
      await tool('user', 'create', READER, PASSWORD);
      await tool('group', 'addmembers', GROUP, `${USER},${READER}`);
    });
    const config = join(dir, 'agent.yaml');
    const yaml = ['agent:', '  id: gw-bench-directory', `  dataDir: ${dataDir}`, 'http:', '  port: 0', 'log:', '  level: warn'];
    yaml.push('mqtt:', '  enabled: false', 'opcua:', '  enabled: false', 'auth:', '  directory:', '    enabled: true', `    url: ${dc.url}`);
    yaml.push(`    caFile: ${dc.caFile}`, `    baseDn: ${dc.baseDn}`, `    bindDn: ${dc.serviceDn}`, `    bindPasswordFile: ${dc.servicePasswordFile}`);
    yaml.push('    recheckIntervalSeconds: 30', '    groups:', `      - { group: ${GROUP}, role: technician }`, '');
    writeFileSync(config, yaml.join('\n'));
    daemon = spawn(process.execPath, [join(ROOT, 'agent/main.js'), 'run', '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
    const urlFile = join(dataDir, 'api.url');
    for (const deadline = Date.now() + 60_000; !existsSync(urlFile); ) {
      if (Date.now() > deadline || daemon.exitCode !== null) throw new Error('the daemon did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
    const port = Number(new URL(readFileSync(urlFile, 'utf8').trim()).port);
    const localToken = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();

    const options: LdapOptions = { caPem: dc.caPem, connectTimeoutMs: 3000, timeoutMs: 3000 };
    const login = async (user = USER) => {
      const r = await call(http, port, 'POST', '/api/v1/session', { body: { user, password: PASSWORD } });
      if (r.status !== 201) throw new Error(`POST /api/v1/session: ${r.status} ${r.text}`);
      return (JSON.parse(r.text) as { token: string }).token;
    };
    // Warm-up: TLS sessions, the JIT, the DC's caches.
    for (let i = 0; i < 10; i++) {
      await rawLogin(dc, options);
      await login();
    }
    const raw: number[] = [];
    const daemonLogins: number[] = [];
    for (let i = 0; i < LOGINS; i++) {
      let t = performance.now();
      await rawLogin(dc, options);
      raw.push(performance.now() - t);
      t = performance.now();
      await login();
      daemonLogins.push(performance.now() - t);
    }
    raw.sort((a, b) => a - b);
    daemonLogins.sort((a, b) => a - b);

    const sessionToken = await login(READER);
    await meRate(port, sessionToken);
    await meRate(port, localToken);
    const session = await meRate(port, sessionToken);
    const local = await meRate(port, localToken);

    const row = (p: number): BenchResult => {
      const d = percentile(daemonLogins, p);
      const r = percentile(raw, p);
      return {
        name: `directory: login p${p}`,
        value: d,
        unit: 'ms',
        limit: `raw LDAPS bind+search+bind p${p} ${ms(r)} ms, same DC, same run (login ${ms(d)} ms, ratio ${(d / r).toFixed(2)})`,
      };
    };
    return [
      row(50),
      row(95),
      {
        name: 'directory: session requests',
        value: session,
        unit: 'req/s',
        limit: `local token ${Math.round(local).toLocaleString('en-US')} req/s (ratio ${(session / local).toFixed(2)})`,
      },
    ];
  } finally {
    http.destroy();
    if (daemon && daemon.exitCode === null) await new Promise((r) => (daemon!.once('exit', r), daemon!.kill('SIGTERM')));
    await dc?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
