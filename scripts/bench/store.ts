import { closeSync, fsyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import pino from 'pino';
import { Store } from '../../agent/store/database.js';
import type { BenchResult } from './result.js';

/** Runs `fn` repeatedly for about `ms` and returns operations per second. */
function rate(ms: number, fn: () => number): number {
  const end = performance.now() + ms;
  const start = performance.now();
  let ops = 0;
  while (performance.now() < end) ops += fn();
  return ops / ((performance.now() - start) / 1000);
}

/**
 * Commit rates of the agent's Store on this disk: a normal commit, a
 * durable() commit (synchronous=FULL), and batched rows. The durable rate
 * is compared with the raw fsync rate of the same directory, which bounds it.
 */
export function storeBench(): BenchResult[] {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-'));
  try {
    const { store } = Store.open(
      { path: join(dir, 'bench.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 64 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    );
    store.db.exec('CREATE TABLE bench (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)');
    const insert = store.db.prepare('INSERT INTO bench (payload) VALUES (?)');
    const payload = 'x'.repeat(200);

    const normal = rate(1000, () => {
      store.transaction(() => insert.run(payload));
      return 1;
    });
    const durable = rate(1000, () => {
      store.durable(() => insert.run(payload));
      return 1;
    });
    const batched = rate(1000, () => {
      store.durable(() => {
        for (let i = 0; i < 1000; i++) insert.run(payload);
      });
      return 1000;
    });
    store.close();

    // The same inserts into an in-memory database: the cost with no disk at all.
    const memory = new BetterSqlite3(':memory:');
    memory.exec('CREATE TABLE bench (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)');
    const memInsert = memory.prepare('INSERT INTO bench (payload) VALUES (?)');
    const inMemory = rate(1000, () => {
      memory.transaction(() => {
        for (let i = 0; i < 1000; i++) memInsert.run(payload);
      })();
      return 1000;
    });
    memory.close();

    const fd = openSync(join(dir, 'fsync.bin'), 'w');
    const block = Buffer.alloc(4096, 1);
    const fsyncs = rate(1000, () => {
      writeSync(fd, block);
      fsyncSync(fd);
      return 1;
    });
    closeSync(fd);

    return [
      { name: 'store: single-row commit, synchronous=NORMAL', value: normal, unit: 'commits/s', limit: 'no fsync per commit (WAL)' },
      {
        name: 'store: single-row durable() commit, FULL',
        value: durable,
        unit: 'commits/s',
        limit: `raw write+fsync on this disk: ${Math.round(fsyncs).toLocaleString('en-US')}/s`,
      },
      {
        name: 'store: 1,000-row durable() batches',
        value: batched,
        unit: 'rows/s',
        limit: `same inserts in memory: ${Math.round(inMemory).toLocaleString('en-US')} rows/s`,
      },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
