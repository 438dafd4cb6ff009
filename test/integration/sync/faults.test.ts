import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../../agent/store/database.js';
import { DeviceRepository } from '../../../agent/store/deviceRepository.js';
import { SyncRepository } from '../../../agent/store/syncRepository.js';
import { Daemon, runCli, tempDir, writeConfig, type LogLine } from '../../helpers/daemon.js';
import { receiverPki, startReceiver, type Receiver } from '../../helpers/receiver.js';

const GATEWAY = 'gw-faults';
const DEVICES = 200;
const SPLIT_AFTER = 3;
const name = (i: number) => `dev-${String(i).padStart(3, '0')}`;
const id = (i: number) => `mqtt:${name(i)}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `find` until it returns something, or fails after `timeoutMs` saying `what`. */
async function until<T>(what: string, find: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await find();
    if (found !== undefined && found !== false) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe('upstream sync under injected receiver faults (reference receiver, real daemon)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let receiver: Receiver;
  let daemon: Daemon;
  let config: string;
  let store: Store;
  let devices: DeviceRepository;
  let sync: SyncRepository;
  let base: string;
  let changes = 0;
  const settings: Record<string, string | number> = {
    batchSize: 20,
    idleMs: 100,
    retryInitialMs: 100,
    retryMaxMs: 1000,
    splitAfterServerErrors: SPLIT_AFTER,
    stuckAfterMs: 1500,
    reconcileIntervalMs: 0,
    timeoutMs: 5000,
  };
  let receiverConfig: { port: number; ca: string };
  const writeSettings = () =>
    writeConfig(
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
        `  baseUrl: https://127.0.0.1:${receiverConfig.port}`,
        `  caFile: ${receiverConfig.ca}`,
        `  tokenFile: ${join(tmp.dir, 'token')}`,
        ...Object.entries(settings).map(([k, v]) => `  ${k}: ${v}`),
        '',
      ].join('\n'),
    );
  /** Live keys changed with SIGHUP, as an operator does. */
  const reload = async (change: Record<string, number>) => {
    Object.assign(settings, change);
    writeSettings();
    const from = daemon.logs.length;
    daemon.kill('SIGHUP');
    await daemon.waitForLog((l) => l.msg === 'configuration reloaded', 15_000, from);
  };
  const cli = async <T>(...args: string[]) => {
    const r = await runCli([...args, '--config', config, '--json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  const metrics = async () => (await fetch(`${base}/metrics`)).text();
  /** One change to each device in `which`, committed as the agent's own code makes them. */
  const mutate = (which: number[]) => {
    store.transaction(() => {
      for (const i of which) {
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
  };
  /** Until the receiver holds the agent's latest revision of every device (but `except`) and nothing waits to be sent. */
  const converged = (except: string[] = [], timeoutMs = 60_000) =>
    until(
      'the receiver to hold every revision',
      () => {
        const theirs = receiver.holdings(GATEWAY);
        const behind = [...sync.revisions()].filter(([d, rev]) => !except.includes(d) && theirs.get(d) !== rev);
        return behind.length === 0 && sync.outboxSize() === 0 && sync.batches().length === 0;
      },
      timeoutMs,
    );
  /** Changes the receiver's own database behind the agent's back, in one transaction. */
  const tamper = (fn: (db: Database.Database) => void) => {
    const db = new Database(receiver.db);
    try {
      db.pragma('busy_timeout = 10000');
      db.transaction(() => fn(db))();
    } finally {
      db.close();
    }
  };

  beforeAll(async () => {
    tmp = tempDir();
    const pki = await receiverPki(tmp.dir);
    writeFileSync(join(tmp.dir, 'token'), 'cmms-token\n', { mode: 0o600 });
    receiver = await startReceiver({ db: join(tmp.dir, 'cmms.db'), cert: pki.cert, key: pki.key, base: ['--token-file', join(tmp.dir, 'token')] });
    receiverConfig = { port: receiver.port, ca: pki.ca };
    config = writeSettings();
    ({ store } = Store.open(
      { path: join(tmp.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 10_000, journalSizeLimitBytes: 1 << 26, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    ));
    devices = new DeviceRepository(store);
    sync = new SyncRepository(store);
    store.transaction(() => {
      for (let i = 0; i < DEVICES; i++) devices.apply({ protocol: 'mqtt', name: name(i), to: 'discovered', cause: 'test device', actor: 'test' });
    });
    daemon = Daemon.start(config);
    base = await daemon.ready();
    await converged();
  }, 180_000);

  afterAll(async () => {
    store?.close();
    await daemon?.dispose();
    await receiver?.stop();
    tmp?.cleanup();
  });

  it('isolates a record the receiver answers 500 for: the rest arrives, the culprit alone ends as a dead letter, ' +
    'and each batch keeps one retry schedule', async () => {
    const culprit = id(7);
    receiver = await receiver.restart(['--fail-item', culprit]);
    const from = daemon.logs.length;
    const before = receiver.requests().length;
    mutate(Array.from({ length: DEVICES }, (_, i) => i));
    await converged([culprit]);
    expect(sync.deadLetters()).toEqual([expect.objectContaining({ deviceId: culprit, status: 500, error: expect.stringContaining('--fail-item') })]);
    expect(receiver.holdings(GATEWAY).get(culprit)).toBeLessThan(sync.revisions().get(culprit)!);
    // Found by halving: the culprit's batch was split until it stood alone, after SPLIT_AFTER 500s at each step.
    const requests = receiver.requests().slice(before);
    expect(requests.filter((r) => r.status === 500).length).toBeGreaterThanOrEqual(SPLIT_AFTER * 2);
    expect(daemon.logs.slice(from).some((l) => l.msg.startsWith('the receiver keeps answering 5xx to this batch: splitting it'))).toBe(true);
    // One schedule per batch: after each failure, that batch went again (by either worker) only once the retry time it was given had come.
    const failures = daemon.logs
      .slice(from)
      .filter((l): l is LogLine & { batch: string; retryAt: string } => l.msg.startsWith('sync batch not delivered') && typeof l.batch === 'string');
    expect(failures.length).toBeGreaterThan(0);
    for (const key of new Set(failures.map((f) => f.batch))) {
      const sent = requests.filter((r) => r.idempotency_key === key);
      failures
        .filter((f) => f.batch === key)
        .forEach((f, i) => {
          if (sent[i + 1]) expect(sent[i + 1]!.received_ms, `attempt ${i + 2} of batch ${key}`).toBeGreaterThanOrEqual(Date.parse(f.retryAt));
        });
    }
    expect(receiver.appliedTwice(GATEWAY)).toEqual([]);
    expect(receiver.sentUnderTwoKeys(GATEWAY)).toEqual([]);
    // The dead letter as a technician reads it: its status once.
    const text = await runCli(['sync', 'dead-letters', '--config', config]);
    expect(text.stdout).toMatch(
      new RegExp(`^${culprit} revision \\d+ \\(.+\\): HTTP 500: \\{"error":"internal error while storing ${culprit} \\(--fail-item\\)"\\}\\n$`),
    );
    // The device page says the receiver refused it and why; a viewer (who may not read dead letters) is told the state only.
    const shown = await cli<{ sync: Record<string, unknown> }>('devices', 'show', culprit);
    expect(shown.sync).toMatchObject({ state: 'refused', status: 500, error: expect.stringContaining('--fail-item') });
    expect((await runCli(['users', 'add', 'vic', '--role', 'viewer', '--config', config])).code).toBe(0);
    const viewer = await cli<{ secret: string }>('tokens', 'create', '--user', 'vic');
    const asViewer = await fetch(`${base}/api/v1/devices/${encodeURIComponent(culprit)}`, { headers: { authorization: `Bearer ${viewer.secret}` } });
    expect(((await asViewer.json()) as { sync: unknown }).sync).toEqual({ state: 'refused' });
    receiver = await receiver.restart();
    expect(await cli<{ requeued: number }>('sync', 'retry-dead-letters')).toEqual({ requeued: 1 });
    await converged();
  }, 120_000);

  it('takes a receiver answering 500 to everything for an outage: dead-letters nothing, raises the stuck alarm, ' +
    'and clears it when the receiver is back', async () => {
    receiver = await receiver.restart(['--fail-every', '1']);
    const start = Date.now();
    const from = daemon.logs.length;
    const before = receiver.requests().length;
    // One batch of three: split once (2 + 1), then neither half is split or dead-lettered, since the receiver accepts nothing.
    mutate([20, 21, 22]);
    await daemon.waitForLog((l) => l.msg.startsWith('the receiver keeps answering 5xx to this batch: splitting it'), 30_000, from);
    const halves = await until('both halves taken for an outage', () => {
      const lines = daemon.logs.slice(from).filter((l) => l.msg.startsWith('the receiver answers 5xx to this batch and has accepted no other meanwhile'));
      return lines.length >= 2 && lines;
    });
    expect(halves.map((l) => l.items).sort()).toEqual([1, 2]);
    // Well past the point where an item at fault would have been dead-lettered.
    const alone = String(halves.find((l) => l.items === 1)!.batch);
    await until(
      'more 500s for the single-item half',
      () =>
        receiver
          .requests()
          .slice(before)
          .filter((r) => r.idempotency_key === alone).length >=
        SPLIT_AFTER + 3,
    );
    expect(sync.deadLetterCount()).toBe(0);
    expect(
      sync
        .batches()
        .map((b) => b.items.length)
        .sort(),
    ).toEqual([1, 2]);
    // The alarm: in the log, in /metrics and in sync status.
    const raised = await daemon.waitForLog((l) => l.msg.startsWith('sync stuck') && Date.parse(String(l.since)) >= start - 1_000, 15_000, from);
    expect(await metrics()).toMatch(/^edge_agent_sync_stuck_batches [12]$/m);
    const status = await cli<{ stuck?: { batches: number; since: string }; deadLetters: number }>('sync', 'status');
    expect(status.stuck?.batches).toBeGreaterThanOrEqual(1);
    expect(status.deadLetters).toBe(0);
    const text = await runCli(['sync', 'status', '--config', config]);
    expect(text.stdout).toMatch(/^ {2}STUCK: \d batch\(es\) not accepted since /m);
    expect(text.stdout.endsWith('\n')).toBe(true);
    // Back: everything arrives, nothing was lost, the alarm clears.
    receiver = await receiver.restart();
    await converged();
    await daemon.waitForLog((l) => l.msg === 'sync no longer stuck', 15_000, daemon.logs.indexOf(raised) + 1);
    expect(await metrics()).toMatch(/^edge_agent_sync_stuck_batches 0$/m);
    expect((await cli<{ stuck?: unknown }>('sync', 'status')).stuck).toBeUndefined();
    expect(sync.deadLetterCount()).toBe(0);
  }, 120_000);

  it('recovers at once on sync now (API or --local) or SIGHUP when the receiver comes back during a long backoff', async () => {
    // An hour's first wait: full jitter picks one under 90 s (which fails again and is waited out) one time in forty.
    await reload({ retryInitialMs: 3_600_000, retryMaxMs: 86_400_000 });
    const triggers: [string, () => Promise<void>][] = [
      ['sync now', async () => void (await cli('sync', 'now'))],
      ['sync now --local', async () => void (await cli('sync', 'now', '--local'))],
      ['SIGHUP', async () => daemon.kill('SIGHUP')],
    ];
    for (const [k, [how, trigger]] of triggers.entries()) {
      await receiver.stop();
      mutate([30 + k, 40 + k]);
      // The batch failed and waits for its retry, more than 90 s away (full jitter may pick a short wait first: it fails
      // again), so that what is left of it after the receiver's restart and the trigger on a loaded machine still
      // leaves the convergence check a deadline of a minute or so.
      const retryAt = await until(
        `${how}: a long backoff`,
        () => {
          const at = sync.getState<string>('nextAttemptAt');
          return at !== undefined && Date.parse(at) - Date.now() > 90_000 && Date.parse(at);
        },
        240_000,
      );
      receiver = await receiver.restart();
      await trigger();
      // Before the backoff would have ended (with a second to spare for the check itself).
      await converged([], Math.min(retryAt - Date.now() - 1_000, 60_000));
    }
    await reload({ retryInitialMs: 100, retryMaxMs: 1000 });
  }, 600_000);

  it('finds by itself, every reconcileIntervalMs, devices the receiver lost or holds at another revision, reports them and sends them again', async () => {
    await converged();
    const from = daemon.logs.length;
    tamper((db) => {
      const run = (sql: string, ...ids: string[]) =>
        db.prepare(`${sql} WHERE gateway_id = ? AND device_id IN (${ids.map(() => '?').join(', ')})`).run(GATEWAY, ...ids);
      run('DELETE FROM devices', id(50), id(51), id(52));
      run('UPDATE devices SET revision = revision - 1', id(53), id(54));
      run('UPDATE devices SET revision = revision + 5', id(55), id(56));
    });
    await reload({ reconcileIntervalMs: 1_000 });
    const line = await daemon.waitForLog((l) => l.msg.startsWith('the receiver diverged from the agent'), 20_000, from);
    expect(line).toMatchObject({ missing: 3, behind: 2, ahead: 2 });
    expect((line.examples as string[]).length).toBeGreaterThan(0);
    const status = await cli<{ lastDivergence?: Record<string, unknown> }>('sync', 'status');
    expect(status.lastDivergence).toMatchObject({ missing: 3, behind: 2, ahead: 2 });
    const m = await metrics();
    expect(m).toMatch(/^edge_agent_sync_divergent_devices_total\{kind="missing"\} 3$/m);
    expect(m).toMatch(/^edge_agent_sync_divergent_devices_total\{kind="behind"\} 2$/m);
    expect(m).toMatch(/^edge_agent_sync_divergent_devices_total\{kind="ahead"\} 2$/m);
    // Sent again, the ones the receiver held newer above its revision.
    await converged();
    await reload({ reconcileIntervalMs: 0 });
  }, 120_000);

  it('reconciles when a change is answered stale at its first send (the receiver holds a newer revision), so the change is not lost', async () => {
    await converged();
    const from = daemon.logs.length;
    tamper((db) => db.prepare('UPDATE devices SET revision = revision + 10 WHERE gateway_id = ? AND device_id = ?').run(GATEWAY, id(60)));
    mutate([60]);
    await daemon.waitForLog((l) => l.msg.startsWith('the receiver answered stale to a first send'), 20_000, from);
    await converged();
    expect(receiver.holdings(GATEWAY).get(id(60))).toBe(sync.revisions().get(id(60)));
  }, 180_000);
});
