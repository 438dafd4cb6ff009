import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreCorruptError } from '../../agent/errors.js';
import { Store, type StoreOptions } from '../../agent/store/database.js';
import { tempDir } from '../helpers/daemon.js';

const log = pino({ level: 'silent' });

describe('Store', () => {
  let tmp: ReturnType<typeof tempDir>;
  let options: StoreOptions;
  beforeEach(() => {
    tmp = tempDir();
    options = {
      path: join(tmp.dir, 'nested', 'agent.db'),
      busyTimeoutMs: 1234,
      journalSizeLimitBytes: 1_048_576,
      integrityCheck: 'full',
    };
  });
  afterEach(() => tmp.cleanup());

  it('opens in WAL mode with the configured pragmas, creating the directory 0700 and the file 0600', () => {
    const { store } = Store.open(options, log);
    const pragma = (name: string) => store.db.pragma(name, { simple: true });
    expect(pragma('journal_mode')).toBe('wal');
    expect(pragma('foreign_keys')).toBe(1);
    expect(pragma('busy_timeout')).toBe(1234);
    expect(pragma('journal_size_limit')).toBe(1_048_576);
    expect(pragma('synchronous')).toBe(1); // NORMAL
    expect(pragma('temp_store')).toBe(2); // MEMORY: statement journals are not written to temporary files
    expect(statSync(join(tmp.dir, 'nested')).mode & 0o777).toBe(0o700);
    expect(statSync(options.path).mode & 0o777).toBe(0o600);
    store.close();
  });

  it('commits durable() transactions at synchronous=FULL and returns to NORMAL after, even on error', () => {
    const { store } = Store.open(options, log);
    store.db.exec('CREATE TABLE t (x INTEGER NOT NULL)');
    let during: unknown;
    store.durable(() => {
      during = store.db.pragma('synchronous', { simple: true });
      store.db.prepare('INSERT INTO t VALUES (1)').run();
    });
    expect(during).toBe(2); // FULL
    expect(store.db.pragma('synchronous', { simple: true })).toBe(1);
    expect(() =>
      store.durable(() => {
        store.db.prepare('INSERT INTO t VALUES (2)').run();
        store.db.prepare('INSERT INTO t VALUES (NULL)').run();
      }),
    ).toThrow(/NOT NULL/);
    expect(store.db.pragma('synchronous', { simple: true })).toBe(1);
    expect(store.db.prepare('SELECT x FROM t').all()).toEqual([{ x: 1 }]);
    expect(() => store.transaction(() => store.durable(() => 1))).toThrow(/cannot be nested/);
    store.close();
  });

  it('reading() runs its reads in one read transaction, which a write transaction inside ends first', async () => {
    const { store } = Store.open(options, log);
    store.db.exec('CREATE TABLE t (x INTEGER NOT NULL)');
    const other = Store.open(options, log).store;
    const count = () => (store.db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n;
    // One snapshot: a row another connection commits between two reads is not seen by the second.
    const seen = store.reading(() => {
      const before = count();
      other.db.prepare('INSERT INTO t VALUES (1)').run();
      return [before, count(), store.db.inTransaction];
    });
    expect(seen).toEqual([0, 0, true]);
    expect(store.db.inTransaction).toBe(false);
    expect(count()).toBe(1);
    // A durable() inside ends the read transaction, commits on its own, and what it queued after its commit runs.
    let told = 0;
    const inside = store.reading(() => {
      count();
      store.durable(() => {
        store.db.prepare('INSERT INTO t VALUES (2)').run();
        store.afterCommit('t', () => (told += 1));
      });
      return { inTransaction: store.db.inTransaction, n: count() };
    });
    expect(inside).toEqual({ inTransaction: false, n: 2 });
    expect(told).toBe(1);
    expect(other.db.prepare('SELECT count(*) AS n FROM t').get()).toEqual({
      n: 2,
    });
    // An async function: only what runs before its first await is inside.
    const phases: boolean[] = [];
    await store.reading(async () => {
      phases.push(store.db.inTransaction);
      await Promise.resolve();
      phases.push(store.db.inTransaction);
    });
    expect(phases).toEqual([true, false]);
    // A throw ends it too; inside a transaction it is a plain call.
    expect(() =>
      store.reading(() => {
        count();
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(store.db.inTransaction).toBe(false);
    expect(store.transaction(() => store.reading(() => count()))).toBe(2);
    other.close();
    store.close();
  });

  it('refuses a file that is not a database with StoreCorruptError', () => {
    writeFileSync(join(tmp.dir, 'junk.db'), Buffer.alloc(8192, 0x41));
    expect(() => Store.open({ ...options, path: join(tmp.dir, 'junk.db') }, log)).toThrow(StoreCorruptError);
  });

  it('reopens an existing database without migrating again', () => {
    Store.open(options, log).store.close();
    const { store, migration } = Store.open(options, log);
    expect(migration.applied).toEqual([]);
    store.close();
    store.close(); // a second close is harmless
  });
});
