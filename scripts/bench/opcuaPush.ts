import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPair } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import pino from 'pino';
import { loadOpcua } from '../../agent/transport/opcuaLoader.js';
// The fixture the tests use (a development dependency: the benchmark runs from a checkout).
import { startOpcuaServer, type OpcuaServerHandle } from '../lib/opcuaServer.js';
import type { BenchResult } from './result.js';

const SERVERS = 20;
const ADMIN = { username: 'secadmin', password: 'bench-secret' };
const MAIN = resolve(fileURLToPath(new URL('../../agent/main.js', import.meta.url)));
const generateRsa = promisify(generateKeyPair);

/**
 * Push provisioning of 20 node-opcua servers at once, by the real daemon
 * (opcua.push.concurrency 20): wall time from the discovery request to the
 * 20th server verified with its new certificate. Compared with what the
 * servers must spend anyway in the same run: 20 RSA-2048 key generations
 * at once in the servers' process (their CreateSigningRequest), and the
 * ~2 s a node-opcua server waits after ApplyChanges before it serves the
 * new certificate.
 */
export async function opcuaPushBench(): Promise<BenchResult[]> {
  await loadOpcua(pino({ level: 'silent' }));
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-push-'));
  const servers: OpcuaServerHandle[] = [];
  let daemon: ReturnType<typeof spawn> | undefined;
  try {
    for (let i = 0; i < SERVERS; i++) {
      servers.push(
        await startOpcuaServer({
          host: `127.0.2.${i + 1}`,
          applicationUri: `urn:bench:push:${i}`,
          securityModes: 'secure',
          acceptUnknownClientCertificates: false,
          pushManagement: { securityAdmin: ADMIN },
        }),
      );
    }
    const config = join(dir, 'edge-agent.yaml');
    writeFileSync(
      config,
      [
        'agent:',
        '  id: gw-bench',
        `  dataDir: ${join(dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'ca:',
        '  rootKeyType: rsa-2048',
        'opcua:',
        `  endpoints: [${servers.map((s) => s.endpointUrl).join(', ')}]`,
        `  scan: { concurrency: ${SERVERS} }`,
        '  timeoutMs: 10000',
        '  push:',
        "    approve: [{ applicationUri: 'urn:bench:push:*' }]",
        `    securityAdmins: [{ applicationUri: 'urn:bench:push:*', username: ${ADMIN.username}, password: ${ADMIN.password} }]`,
        `    concurrency: ${SERVERS}`,
        '    stepTimeoutMs: 30000',
        '    applyWaitMs: 60000',
        '',
      ].join('\n'),
    );
    const cli = (...args: string[]) => {
      const r = spawnSync(process.execPath, [MAIN, ...args, '--config', config], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`edge-agent ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    daemon = spawn(process.execPath, [MAIN, 'run', '--config', config], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((ready, failed) => {
      let out = '';
      daemon!.stdout!.on('data', (d: Buffer) => {
        out = (out + d.toString()).slice(-100_000);
        if (out.includes('"msg":"edge-agent ready"')) ready();
      });
      daemon!.once('exit', (code) => failed(new Error(`the daemon exited (${code}) before it was ready`)));
    });

    // The one-time commissioning: every server trusts the agent's client certificate (with our CA and CRLs).
    cli('opcua', 'client-bundle', '--out', join(dir, 'bundle'));
    const read = (sub: string) => readdirSync(join(dir, 'bundle', sub)).map((f) => readFileSync(join(dir, 'bundle', sub, f)));
    const commissioning = { certificate: read('trusted/certs')[0]!, issuers: read('issuers/certs'), crls: read('issuers/crl') };
    for (const s of servers) await s.trustCaIssuedClient(commissioning);

    const started = performance.now();
    cli('opcua', 'discover', '--wait', '0');
    const db = new Database(join(dir, 'data', 'edge-agent.db'), { readonly: true, fileMustExist: true });
    db.pragma('busy_timeout = 5000');
    let done = 0;
    for (const deadline = Date.now() + 300_000; done < SERVERS; ) {
      const rows = db.prepare('SELECT status, reason FROM opcua_push_jobs').all() as { status: string; reason: string | null }[];
      done = rows.filter((r) => r.status === 'done').length;
      const broken = rows.find((r) => r.status === 'failed' || r.status === 'unsupported' || r.status === 'stopped');
      if (broken) throw new Error(`a push did not complete: ${broken.status}: ${broken.reason}`);
      if (Date.now() > deadline) throw new Error(`${done} of ${SERVERS} servers provisioned after 300 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const wall = performance.now() - started;
    const run = db.prepare('SELECT started_at, finished_at FROM discovery_runs ORDER BY id DESC LIMIT 1').get() as { started_at: string; finished_at: string };
    const span = db.prepare("SELECT min(at) AS first, max(at) AS last FROM opcua_push_steps WHERE step IN ('approved', 'verify')").get() as {
      first: string;
      last: string;
    };
    const discoveryMs = Date.parse(run.finished_at) - Date.parse(run.started_at);
    const pushMs = Date.parse(span.last) - Date.parse(span.first);
    db.close();

    // The servers' own share in the same run: their 20 new RSA-2048 keys, made at once in their process.
    const keygenStart = performance.now();
    await Promise.all(Array.from({ length: SERVERS }, () => generateRsa('rsa', { modulusLength: 2048 })));
    const keygen = performance.now() - keygenStart;
    return [
      {
        name: `opcua: discover and push-provision ${SERVERS} servers at once`,
        value: wall,
        unit: 'ms',
        limit: `from the CLI request to the last server verified: discovery run ${discoveryMs} ms, first approval to last verification ${pushMs} ms`,
      },
      {
        name: `opcua: push part alone (${SERVERS} servers)`,
        value: pushMs,
        unit: 'ms',
        limit:
          `what the servers spend anyway, same run: ${SERVERS} RSA-2048 key generations at once ${Math.round(keygen)} ms` +
          ' + the ~2,000 ms a node-opcua server waits after ApplyChanges',
      },
    ];
  } finally {
    if (daemon && daemon.exitCode === null) {
      daemon.kill('SIGTERM');
      await new Promise((r) => daemon!.once('exit', r));
    }
    for (const s of servers) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
