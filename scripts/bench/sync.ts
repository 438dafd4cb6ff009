import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'node:https';
import pino from 'pino';
import { CertificateAuthority } from '../../certs/authority.js';
import { initCa } from '../../certs/hierarchy.js';
import { IssuingCa } from '../../certs/issuer.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import { CertificateRepository } from '../../agent/store/certificateRepository.js';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import { upstreamItem } from '../../agent/sync/record.js';
import type { BenchResult } from './result.js';

const REVISIONS = 100_000;
const BATCH = 1_000;
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** Starts the reference receiver; resolves with its port once it listens. */
async function receiver(dir: string, db: string, tls: { cert: string; key: string }): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    [join(ROOT, 'scripts/cmms/referenceServer.js'), '--db', join(dir, db), '--cert', tls.cert, '--key', tls.key, '--token-file', join(dir, 'token')],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await new Promise<number>((ok, fail) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{"port"'));
      if (line) ok((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => fail(new Error(`receiver exited ${code}`)));
  });
  return { port, child };
}

const stop = (child: ChildProcess | undefined) =>
  child && child.exitCode === null ? new Promise((r) => (child.once('exit', r), child.kill('SIGTERM'))) : Promise.resolve();

/**
 * Draining a backlog of 100,000 device revisions to the reference receiver
 * on loopback through the real daemon (outbox, stored batches, HTTPS with
 * a token), next to the receiver's own ingest rate for the same batches
 * posted directly, one at a time, in the same run.
 */
export async function syncBench(): Promise<BenchResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-sync-'));
  const log = pino({ level: 'silent' });
  let daemon: ChildProcess | undefined;
  const receivers: ChildProcess[] = [];
  try {
    // The receiver's TLS certificate from a CA of its own (the gateway CA code, in a directory apart).
    const caDir = join(dir, 'cmms-ca');
    initCa({
      dir: caDir,
      passphrase: undefined,
      organization: 'CMMS',
      gatewayId: 'cmms',
      rootKeyType: 'ec-p256',
      issuers: { ec: 'ec-p256' },
      rootValidityDays: 30,
      issuingValidityDays: 30,
    });
    const { store: caStore } = Store.open({ path: join(dir, 'cmms-ca.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' }, log);
    const authority = new CertificateAuthority({
      issuers: { ec: IssuingCa.load(caDir, 'ec', undefined)! },
      store: new CertificateRepository(caStore),
      organization: 'CMMS',
      validityDays: { 'mqtt-device': 30, 'opcua-application': 30, 'broker-server': 30, 'agent-client': 30 },
      allowKeyReuse: false,
    });
    const key = SoftwareKey.generate('ec-p256');
    const issued = await authority.issue({
      profile: 'broker-server',
      identity: 'cmms',
      ipAddresses: ['127.0.0.1'],
      csr: buildCsr(key, encodeName({ commonName: 'cmms' })),
    });
    caStore.close();
    const tls = { cert: join(dir, 'receiver.crt'), key: join(dir, 'receiver.key') };
    writeFileSync(tls.cert, issued.record.pem + issued.chain.slice(0, -1).join(''));
    writeFileSync(tls.key, key.exportable().export({ type: 'pkcs8', format: 'pem' }) as string);
    writeFileSync(join(dir, 'ca.pem'), issued.chain.at(-1)!);
    writeFileSync(join(dir, 'token'), 'bench-token\n');

    // The agent's database with 100,000 devices, each one revision waiting in the outbox.
    const dataDir = join(dir, 'data');
    const { store } = Store.open({ path: join(dataDir, 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 64 << 20, integrityCheck: 'off' }, log);
    const devices = new DeviceRepository(store);
    for (let i = 0; i < REVISIONS; i += 5_000) {
      store.transaction(() => {
        for (let k = i; k < Math.min(i + 5_000, REVISIONS); k++) {
          devices.apply({
            protocol: 'mqtt',
            name: `dev-${k}`,
            to: 'discovered',
            cause: 'bench',
            actor: 'bench',
            patch: { nameplate: { manufacturer: 'ACME', model: 'P-1', serialNumber: `SN-${k}` } },
          });
        }
      });
    }
    const bodies: string[] = [];
    const all = devices.list();
    for (let i = 0; i < all.length; i += BATCH) bodies.push(JSON.stringify({ items: all.slice(i, i + BATCH).map((d) => upstreamItem(d, undefined, {})) }));
    store.close();

    // Direct: the same batches posted to a receiver of its own, one at a time.
    const direct = await receiver(dir, 'direct.db', tls);
    receivers.push(direct.child);
    const agent = new Agent({ keepAlive: true, ca: issued.chain.at(-1)! });
    const post = (body: string, i: number) =>
      new Promise<void>((ok, fail) => {
        const req = request(
          {
            host: '127.0.0.1',
            port: direct.port,
            path: '/v1/gateways/gw-bench/devices:batch',
            method: 'POST',
            agent,
            headers: {
              authorization: 'Bearer bench-token',
              'idempotency-key': `direct-${i}`,
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(body),
            },
          },
          (res) => {
            res.resume();
            res.on('end', () => (res.statusCode === 200 ? ok() : fail(new Error(`direct post: ${res.statusCode}`))));
          },
        );
        req.on('error', fail);
        req.end(body);
      });
    let started = performance.now();
    for (const [i, body] of bodies.entries()) await post(body, i);
    const directRate = REVISIONS / ((performance.now() - started) / 1000);
    agent.destroy();

    // Through the daemon.
    const upstream = await receiver(dir, 'cmms.db', tls);
    receivers.push(upstream.child);
    const config = join(dir, 'edge-agent.yaml');
    writeFileSync(
      config,
      [
        'agent:',
        '  id: gw-bench',
        `  dataDir: ${dataDir}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        '  enabled: false',
        'sync:',
        '  enabled: true',
        `  baseUrl: https://127.0.0.1:${upstream.port}`,
        `  caFile: ${join(dir, 'ca.pem')}`,
        `  tokenFile: ${join(dir, 'token')}`,
        `  batchSize: ${BATCH}`,
        '  idleMs: 50',
        '  reconcileOnStart: false',
        '',
      ].join('\n'),
    );
    // The gateway CA made beforehand, so that the drain is timed from the daemon's start (the sync starts before readiness).
    execFileSync(process.execPath, [join(ROOT, 'agent/main.js'), 'ca', 'init', '--config', config], { stdio: 'ignore' });
    started = performance.now();
    daemon = spawn(
      process.execPath,
      [
        ...(process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PROFILE] : []),
        join(ROOT, 'agent/main.js'),
        'run',
        '--config',
        config,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    const { store: watch } = Store.open(
      { path: join(dataDir, 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 64 << 20, integrityCheck: 'off' },
      log,
    );
    // A cheap look (no count over the outbox): the poller shares the two cores with the daemon and the receiver.
    const waiting = watch.db.prepare('SELECT EXISTS (SELECT 1 FROM sync_outbox) OR EXISTS (SELECT 1 FROM sync_batches) AS n');
    const left = () => (waiting.get() as { n: number }).n;
    for (const deadline = Date.now() + 600_000; left() > 0; ) {
      if (Date.now() > deadline) throw new Error('revisions still waiting after 600 s');
      if (daemon.exitCode !== null) throw new Error(`the daemon exited (${daemon.exitCode})`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const agentRate = REVISIONS / ((performance.now() - started) / 1000);
    watch.close();
    // Drained means delivered: the receiver holds every revision (none dead-lettered, none answered stale).
    const { default: Database } = await import('better-sqlite3');
    const cmms = new Database(join(dir, 'cmms.db'), { readonly: true });
    const held = (cmms.prepare("SELECT count(*) AS n FROM devices WHERE gateway_id = 'gw-bench'").get() as { n: number }).n;
    cmms.close();
    if (held !== REVISIONS) throw new Error(`the receiver holds ${held} devices, not ${REVISIONS}`);
    return [
      {
        name: `sync: drain ${REVISIONS.toLocaleString('en-US')} revisions to the reference receiver`,
        value: agentRate,
        unit: 'records/s',
        limit:
          `the receiver's direct ingest of the same ${bodies.length} batches, same run: ${Math.round(directRate).toLocaleString('en-US')}/s` +
          ` (ratio ${(agentRate / directRate).toFixed(2)}; target >= 5,000/s and >= 0.5); timed from the daemon's start`,
      },
    ];
  } finally {
    await stop(daemon);
    for (const r of receivers) await stop(r);
    rmSync(dir, { recursive: true, force: true });
  }
}
