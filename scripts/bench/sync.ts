import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'node:https';
import pino from 'pino';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import { upstreamItem } from '../../agent/sync/record.js';
import { receiverTls, startReceiver, type ReceiverTls } from '../cmms/receiverKit.js';
import type { BenchResult } from './result.js';

const REVISIONS = 100_000;
const BATCH = 1_000;
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** The reference receiver with the bench's token, its database in `dir`. */
const receiver = (dir: string, db: string, tls: ReceiverTls) => startReceiver({ db: join(dir, db), tls, tokenFile: join(dir, 'token') });

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
    const tls = await receiverTls(dir);
    const receiverCa = readFileSync(tls.ca, 'utf8');
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
    const agent = new Agent({ keepAlive: true, ca: receiverCa });
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
