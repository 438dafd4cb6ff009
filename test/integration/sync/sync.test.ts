import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../../agent/store/database.js';
import { DeviceRepository } from '../../../agent/store/deviceRepository.js';
import { SyncRepository } from '../../../agent/store/syncRepository.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { receiverPki, startReceiver, type Receiver } from '../../helpers/receiver.js';

const GATEWAY = 'gw-sync';
const DEVICES = 2_000;
const name = (i: number) => `dev-${String(i).padStart(4, '0')}`;

describe('upstream sync to the reference receiver (separate processes, HTTPS, SQLite on both sides)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let pki: Awaited<ReturnType<typeof receiverPki>>;
  let receiver: Receiver;
  let port: number;
  let daemon: Daemon;
  let config: string;
  let store: Store;
  let devices: DeviceRepository;
  let sync: SyncRepository;
  let changes = 0;
  let base: string;
  const cli = async <T>(...args: string[]) => {
    const r = await runCli([...args, '--config', config, '--json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  const restartReceiver = async (args: string[] = []) => {
    await receiver.stop();
    receiver = await startReceiver({
      db: join(tmp.dir, 'cmms.db'),
      cert: pki.cert,
      key: pki.key,
      port,
      args: ['--token-file', join(tmp.dir, 'token'), ...args],
    });
  };
  /** `n` changes, each to a random device, committed 200 at a time, as the agent's own code makes them. */
  const mutate = (n: number, only?: number[]) => {
    for (let done = 0; done < n; ) {
      store.transaction(() => {
        for (let k = 0; k < 200 && done < n; k++, done++) {
          const i = only ? only[done % only.length]! : Math.floor(Math.random() * DEVICES);
          changes += 1;
          devices.apply({
            protocol: 'mqtt',
            name: name(i),
            to: 'discovered',
            cause: 'test change',
            actor: 'test',
            patch: { nameplate: { firmwareVersion: `fw-${changes}` } },
          });
        }
      });
    }
  };
  /** Waits until the receiver holds exactly the agent's latest revision of every device (but `except`). */
  const converged = async (except: string[] = [], timeoutMs = 90_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ours = sync.revisions();
      const theirs = receiver.holdings(GATEWAY);
      const behind = [...ours].filter(([id, rev]) => !except.includes(id) && theirs.get(id) !== rev);
      // Done when the receiver holds it all and the agent has had every answer (nothing waits in the outbox or in a batch).
      if (behind.length === 0 && sync.outboxSize() === 0 && sync.batches().length === 0) return { ours, theirs };
      if (Date.now() > deadline)
        throw new Error(
          `${behind.length} devices behind at the receiver, e.g. ${JSON.stringify(behind.slice(0, 3))}; status ${JSON.stringify(await cli('sync', 'status'))}`,
        );
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  beforeAll(async () => {
    tmp = tempDir();
    pki = await receiverPki(tmp.dir);
    writeFileSync(join(tmp.dir, 'token'), 'cmms-token-1\n', { mode: 0o600 });
    receiver = await startReceiver({ db: join(tmp.dir, 'cmms.db'), cert: pki.cert, key: pki.key, args: ['--token-file', join(tmp.dir, 'token')] });
    port = receiver.port;
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        `  id: ${GATEWAY}`,
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        '  enabled: false',
        'sync:',
        '  enabled: true',
        `  baseUrl: https://127.0.0.1:${port}`,
        `  caFile: ${pki.ca}`,
        `  tokenFile: ${join(tmp.dir, 'token')}`,
        '  batchSize: 250',
        '  idleMs: 100',
        '  retryInitialMs: 100',
        '  retryMaxMs: 1000',
        '  timeoutMs: 5000',
        '  location: { site: plant-1, area: packaging, line: "", cell: "" }',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    base = await daemon.ready();
    ({ store } = Store.open(
      { path: join(tmp.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 10_000, journalSizeLimitBytes: 1 << 26, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    ));
    devices = new DeviceRepository(store);
    sync = new SyncRepository(store);
    store.transaction(() => {
      for (let i = 0; i < DEVICES; i++)
        devices.apply({
          protocol: 'mqtt',
          name: name(i),
          to: 'discovered',
          cause: 'test device',
          actor: 'test',
          patch: { nameplate: { manufacturer: 'ACME', model: 'P-1', serialNumber: `SN-${i}` } },
        });
    });
  }, 180_000);

  afterAll(async () => {
    store?.close();
    await daemon?.dispose();
    await receiver?.stop();
    tmp?.cleanup();
  });

  it('delivers every device with the documented record', async () => {
    await converged();
    const db = (await import('better-sqlite3')).default;
    const cmms = new db(receiver.db, { readonly: true });
    const row = cmms.prepare('SELECT record, op FROM devices WHERE gateway_id = ? AND device_id = ?').get(GATEWAY, `mqtt:${name(7)}`) as {
      record: string;
      op: string;
    };
    cmms.close();
    expect(row.op).toBe('upsert');
    expect(JSON.parse(row.record)).toMatchObject({
      deviceId: `mqtt:${name(7)}`,
      manufacturer: { name: 'ACME', uri: null },
      model: 'P-1',
      serialNumber: 'SN-7',
      deviceClass: 'mqtt-device',
      location: { site: 'plant-1', area: 'packaging' },
      source: { protocol: 'mqtt' },
      certificate: null,
      lifecycleState: 'discovered',
      online: false,
    });
    expect(sync.outboxSize()).toBe(0);
  }, 120_000);

  it('after an outage of the receiver during 10,000 changes to 2,000 devices, holds exactly the latest revision of each', async () => {
    await receiver.stop();
    mutate(10_000);
    // One outbox row per changed device, not one per change.
    expect(sync.outboxSize()).toBeLessThanOrEqual(DEVICES);
    expect(sync.outboxSize()).toBeGreaterThan(DEVICES / 2);
    const down = await cli<{ connected: boolean; backlog: number; lastError?: string }>('sync', 'status');
    expect(down.backlog).toBeGreaterThan(0);
    await restartReceiver();
    await converged();
    expect(receiver.appliedTwice(GATEWAY)).toEqual([]);
    // Batches that failed during the outage went again under their own key: no item came in two different batches.
    expect(receiver.sentUnderTwoKeys(GATEWAY)).toEqual([]);
    expect(sync.outboxSize()).toBe(0);
  }, 180_000);

  it('applies nothing twice when answers are lost after the receiver committed', async () => {
    await restartReceiver(['--lose-every', '2']);
    mutate(1_500);
    await converged();
    const requests = receiver.requests();
    const lost = requests.filter((r) => r.status === 0).map((r) => r.idempotency_key);
    expect(lost.length).toBeGreaterThan(0);
    // Each lost answer was asked for again under the same key, and answered from the receiver's idempotency record.
    for (const key of lost) expect(requests.some((r) => r.idempotency_key === key && r.status === 200)).toBe(true);
    expect(receiver.appliedTwice(GATEWAY)).toEqual([]);
    expect(receiver.sentUnderTwoKeys(GATEWAY)).toEqual([]);
  }, 120_000);

  it('waits as long as Retry-After says', async () => {
    await restartReceiver(['--throttle-every', '2', '--throttle-burst', '1', '--retry-after', '1']);
    const before = receiver.requests().length;
    mutate(1_000);
    await converged();
    const requests = receiver.requests().slice(before);
    const throttled = requests.filter((r) => r.status === 429);
    expect(throttled.length).toBeGreaterThan(0);
    // A lower bound on a wait the receiver asked for (protocol behaviour, not speed): once the agent had the 429, no
    // request left it before Retry-After had passed. The receiver cannot see when a request left, only when it arrived:
    // the other worker's request, sent before the 429 reached the agent, may arrive inside the window on a loaded
    // machine, so at most one (IN_FLIGHT - 1) may. An agent that ignored Retry-After would send a batch every few ms.
    for (const t of throttled) {
      const early = requests.filter((r) => r.received_ms > t.at_ms && r.received_ms < t.at_ms + 980);
      expect(early.length, `requests within Retry-After of the 429 answered at ${t.at_ms}: ${JSON.stringify(early)}`).toBeLessThanOrEqual(1);
    }
  }, 120_000);

  it('dead-letters a poison record (422) and a rejected one while the others arrive, and sends them again when asked', async () => {
    const poison = `mqtt:${name(7)}`;
    const refused = `mqtt:${name(8)}`;
    await restartReceiver(['--poison', poison, '--reject', refused]);
    mutate(600, [7, 8, ...Array.from({ length: 298 }, (_, k) => 100 + k)]);
    await converged([poison, refused]);
    const dead = await cli<{ deviceId: string; status?: number; error: string }[]>('sync', 'dead-letters');
    expect(dead.sort((a, b) => a.deviceId.localeCompare(b.deviceId))).toEqual([
      expect.objectContaining({ deviceId: poison, status: 422, error: expect.stringContaining('poison') }),
      expect.objectContaining({ deviceId: refused, status: 200, error: expect.stringContaining('refused by --reject') }),
    ]);
    expect((await cli<{ deadLetters: number }>('sync', 'status')).deadLetters).toBe(2);
    // As a technician reads them: each status once (not "422 422 {...}"), and the status ends its last line.
    const text = (await runCli(['sync', 'dead-letters', '--config', config])).stdout;
    expect(text).toMatch(new RegExp(`^${poison} revision \\d+ \\(.+\\): HTTP 422: \\{"error":"${poison}: this record cannot be stored \\(poison\\)"\\}$`, 'm'));
    expect(text).toMatch(new RegExp(`^${refused} revision \\d+ \\(.+\\): rejected: ${refused}: refused by --reject$`, 'm'));
    const status = (await runCli(['sync', 'status', '--config', config])).stdout;
    expect(status).toMatch(/^ {2}dead letters: 2 /m);
    expect(status.endsWith('\n')).toBe(true);
    expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/^edge_agent_sync_dead_letters 2$/m);
    expect(receiver.holdings(GATEWAY).get(poison)).toBeLessThan(sync.revisions().get(poison)!);
    await restartReceiver();
    expect(await cli<{ requeued: number }>('sync', 'retry-dead-letters')).toEqual({ requeued: 2 });
    await converged();
  }, 120_000);

  it('converges after the agent is killed (kill -9) with a batch in flight', async () => {
    await restartReceiver(['--latency-ms', '1500']);
    mutate(800);
    const deadline = Date.now() + 20_000;
    while (sync.batches().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(sync.batches().length).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 300));
    const inFlight = sync.batches().map((b) => b.key);
    daemon.kill('SIGKILL');
    await daemon.exited;
    await restartReceiver();
    daemon = Daemon.start(config);
    base = await daemon.ready();
    await converged();
    // Each batch stored before the kill was sent again under its own key, and answered.
    for (const key of inFlight) expect(receiver.requests().some((r) => r.idempotency_key === key && r.status === 200)).toBe(true);
    expect(receiver.appliedTwice(GATEWAY)).toEqual([]);
    expect(receiver.sentUnderTwoKeys(GATEWAY)).toEqual([]);
  }, 120_000);

  it('pauses with an alarm when the receiver refuses the token after one more read of it, and resumes when the file changes', async () => {
    writeFileSync(join(tmp.dir, 'receiver-token'), 'cmms-token-2\n');
    await receiver.stop();
    receiver = await startReceiver({
      db: join(tmp.dir, 'cmms.db'),
      cert: pki.cert,
      key: pki.key,
      port,
      args: ['--token-file', join(tmp.dir, 'receiver-token')],
    });
    mutate(50);
    const deadline = Date.now() + 30_000;
    let status = await cli<{ paused?: string; backlog: number }>('sync', 'status');
    while (!status.paused && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      status = await cli('sync', 'status');
    }
    expect(status.paused).toMatch(/^401 from the receiver/);
    expect(status.backlog).toBeGreaterThan(0);
    expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/^edge_agent_sync_paused 1$/m);
    // Paused, it sends nothing more: at most the other worker's request, in flight when the pause began, lands after
    // it. Not paused, it would retry every retryMaxMs (1 s) or sooner, on both workers.
    const refused = receiver.requests().filter((r) => r.status === 401).length;
    await new Promise((r) => setTimeout(r, 2_500));
    expect(receiver.requests().filter((r) => r.status === 401).length).toBeLessThanOrEqual(refused + 1);
    writeFileSync(join(tmp.dir, 'token'), 'cmms-token-2\n');
    await converged();
    expect((await cli<{ paused?: string }>('sync', 'status')).paused).toBeUndefined();
    expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/^edge_agent_sync_paused 0$/m);
  }, 120_000);

  it('brings a receiver restored from an old copy back up to date by reconciliation', async () => {
    await receiver.stop();
    const old = join(tmp.dir, 'cmms-old.db');
    copyFileSync(receiver.db, old);
    await restartReceiver();
    mutate(700);
    await converged();
    await receiver.stop();
    for (const suffix of ['', '-wal', '-shm']) rmSync(`${receiver.db}${suffix}`, { force: true });
    copyFileSync(old, receiver.db);
    await restartReceiver();
    const stale = [...sync.revisions()].filter(([id, rev]) => receiver.holdings(GATEWAY).get(id) !== rev);
    expect(stale.length).toBeGreaterThan(0);
    await cli('sync', 'reconcile');
    await converged();
    expect((await cli<{ lastReconcile?: { queued: number } }>('sync', 'status')).lastReconcile?.queued).toBe(stale.length);
  }, 120_000);

  it("sends again above the receiver's revisions when the agent's own database is restored from an older backup", async () => {
    const backup = join(tmp.dir, 'agent-backup.db');
    const made = await runCli(['backup', backup, '--config', config]);
    expect(made.code, made.stderr).toBe(0);
    mutate(
      400,
      Array.from({ length: 100 }, (_, k) => 500 + k),
    );
    await converged();
    // The gateway's disk is replaced from last night's backup: its revisions go back, the receiver's do not.
    store.close();
    daemon.kill('SIGTERM');
    await daemon.exited;
    const db = join(tmp.dir, 'data', 'edge-agent.db');
    for (const suffix of ['', '-wal', '-shm']) rmSync(`${db}${suffix}`, { force: true });
    copyFileSync(backup, db);
    ({ store } = Store.open({ path: db, busyTimeoutMs: 10_000, journalSizeLimitBytes: 1 << 26, integrityCheck: 'off' }, pino({ level: 'silent' })));
    devices = new DeviceRepository(store);
    sync = new SyncRepository(store);
    const behind = [...sync.revisions()].filter(([id, rev]) => (receiver.holdings(GATEWAY).get(id) ?? 0) > rev).length;
    expect(behind).toBe(100);
    daemon = Daemon.start(config);
    base = await daemon.ready();
    await daemon.waitForLog((l) => l.msg.startsWith('the receiver holds newer revisions than this database'));
    // Changes made after the restore reach the receiver: without the raise they would carry revisions it already has.
    mutate(
      200,
      Array.from({ length: 100 }, (_, k) => 500 + k),
    );
    await converged();
  }, 120_000);

  it('refuses a receiver whose certificate does not chain to the configured CA, and sends nothing', async () => {
    const other = tempDir();
    let d: Daemon | undefined;
    try {
      const wrong = writeConfig(
        other.dir,
        [
          'agent:',
          '  id: gw-wrong-ca',
          `  dataDir: ${join(other.dir, 'data')}`,
          'http:',
          '  port: 0',
          'mqtt:',
          '  enabled: false',
          'opcua:',
          '  enabled: false',
          'sync:',
          '  enabled: true',
          `  baseUrl: https://127.0.0.1:${port}`,
          `  caFile: ${pki.otherCa}`,
          `  tokenFile: ${join(tmp.dir, 'token')}`,
          '  idleMs: 100',
          '  retryInitialMs: 100',
          '  retryMaxMs: 500',
          '',
        ].join('\n'),
      );
      // It has a device to send: with the check off, a batch would reach the receiver.
      const { store: s3 } = Store.open(
        { path: join(other.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 10_000, journalSizeLimitBytes: 1 << 26, integrityCheck: 'off' },
        pino({ level: 'silent' }),
      );
      s3.transaction(() => new DeviceRepository(s3).apply({ protocol: 'mqtt', name: 'meter-2', to: 'discovered', cause: 'test device', actor: 'test' }));
      s3.close();
      const before = receiver.requests().length;
      d = Daemon.start(wrong, { env: { NODE_TLS_REJECT_UNAUTHORIZED: '0' } });
      await d.ready();
      // Refused by TLS, even with NODE_TLS_REJECT_UNAUTHORIZED=0 in its environment.
      const line = await d.waitForLog((l) => l.msg.startsWith('sync batch not delivered'), 20_000);
      expect(String(line.error)).toMatch(/unable to verify the first certificate/);
      const status = JSON.parse((await runCli(['sync', 'status', '--json', '--config', wrong])).stdout) as {
        connected: boolean;
        lastError: string;
        lastSuccess?: string;
      };
      expect(status).toMatchObject({ connected: false });
      expect(status.lastSuccess).toBeUndefined();
      d.kill('SIGTERM');
      await d.exited;
      // Not one batch reached the receiver: TLS refused the connection first.
      expect(receiver.requests().length).toBe(before);
    } finally {
      // A daemon left running by a failed expectation would go on retrying after the test.
      await d?.dispose();
      other.cleanup();
    }
  }, 180_000);

  it("authenticates with mutual TLS and the agent's agent-client certificate alone", async () => {
    const other = tempDir();
    let d: Daemon | undefined;
    let r: Receiver | undefined;
    try {
      const { freePort } = await import('../../../scripts/lib/local.js');
      const mtlsPort = await freePort();
      const mtls = writeConfig(
        other.dir,
        [
          'agent:',
          '  id: gw-mtls',
          `  dataDir: ${join(other.dir, 'data')}`,
          'http:',
          '  port: 0',
          'mqtt:',
          '  enabled: false',
          'opcua:',
          '  enabled: false',
          'sync:',
          '  enabled: true',
          `  baseUrl: https://127.0.0.1:${mtlsPort}`,
          `  caFile: ${pki.ca}`,
          '  clientCertificate: true',
          '  idleMs: 100',
          '  retryInitialMs: 100',
          '  retryMaxMs: 500',
          '',
        ].join('\n'),
      );
      d = Daemon.start(mtls);
      const url = await d.ready();
      // The receiver trusts the gateway CA the daemon made at its first start.
      writeFileSync(join(other.dir, 'gateway-ca.pem'), await (await fetch(`${url}/ca/chain`)).text());
      r = await startReceiver({
        db: join(other.dir, 'cmms.db'),
        cert: pki.cert,
        key: pki.key,
        port: mtlsPort,
        args: ['--client-ca', join(other.dir, 'gateway-ca.pem')],
      });
      const { store: s2 } = Store.open(
        { path: join(other.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 10_000, journalSizeLimitBytes: 1 << 26, integrityCheck: 'off' },
        pino({ level: 'silent' }),
      );
      try {
        s2.transaction(() => new DeviceRepository(s2).apply({ protocol: 'mqtt', name: 'meter-1', to: 'discovered', cause: 'test device', actor: 'test' }));
      } finally {
        s2.close();
      }
      const deadline = Date.now() + 30_000;
      while (r.holdings('gw-mtls').get('mqtt:meter-1') === undefined && Date.now() < deadline) await new Promise((x) => setTimeout(x, 200));
      expect(r.holdings('gw-mtls').get('mqtt:meter-1')).toBe(1);
    } finally {
      await d?.dispose();
      await r?.stop();
      other.cleanup();
    }
  }, 180_000);
});
