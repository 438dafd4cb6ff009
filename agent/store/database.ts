import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { StoreCorruptError, StoreOpenError } from '../errors.js';
import type { Logger } from '../log.js';
import { assertNotNewer, migrate, type MigrationResult } from './migrate.js';
import { MIGRATIONS } from './migrations/index.js';

export type Sqlite = BetterSqlite3.Database;

export interface StoreOptions {
  path: string;
  busyTimeoutMs: number;
  journalSizeLimitBytes: number;
  integrityCheck: 'quick' | 'full' | 'off';
}

const RECOVERY_HINT =
  'the agent will not run on it: restore the last backup to this path, or move the file aside to start with an empty database (see docs/storage.md)';

const CORRUPTION_CODES = new Set(['SQLITE_NOTADB', 'SQLITE_CORRUPT', 'SQLITE_CORRUPT_VTAB', 'SQLITE_CORRUPT_SEQUENCE']);

/** Turns SQLite's corruption codes into StoreCorruptError; other errors pass through. */
function classify(err: unknown, path: string, step: string): unknown {
  const code = (err as { code?: string }).code;
  if (code !== undefined && CORRUPTION_CODES.has(code)) {
    return new StoreCorruptError(`database ${path} is corrupt or not a SQLite database (${code}: ${(err as Error).message}, during ${step}); ${RECOVERY_HINT}`, {
      cause: err,
      details: { path, sqliteCode: code },
    });
  }
  return err;
}

/**
 * The SQLite connection and its two kinds of transaction.
 *
 * The connection runs in WAL mode at `synchronous=NORMAL`: a crash of the
 * process loses nothing committed, and a power cut can lose only the last
 * commits before it, never consistency. Where an effect leaves the process
 * after a commit (a certificate handed out, a record acknowledged upstream,
 * a migration), use `durable()`: it commits at `synchronous=FULL`, so the
 * WAL is fsynced before the call returns and the effect can never be ahead
 * of the disk (see docs/storage.md).
 */
export class Store {
  private readonly statements = new Map<string, BetterSqlite3.Statement>();

  private constructor(
    readonly db: Sqlite,
    readonly path: string,
  ) {}

  /**
   * A prepared statement, prepared once per connection: preparing costs
   * more than running the small statements the repositories use. Only for
   * SQL text from the code, never built from input (the cache has no bound).
   */
  statement(sql: string): BetterSqlite3.Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  /**
   * Opens (creating the file and its directory with owner-only permissions
   * if needed), sets pragmas, checks integrity and applies migrations.
   */
  static open(options: StoreOptions, log: Logger): { store: Store; migration: MigrationResult } {
    const { path } = options;
    const dir = dirname(path);
    if (!existsSync(dir)) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      log.info({ dir }, 'created data directory');
    }
    const isNew = !existsSync(path);
    let db: Sqlite;
    try {
      db = new BetterSqlite3(path, { timeout: options.busyTimeoutMs });
    } catch (err) {
      throw new StoreOpenError(`cannot open database ${path}: ${(err as Error).message}`, { cause: err, details: { path } });
    }
    if (isNew) chmodSync(path, 0o600);
    try {
      const store = new Store(db, path);
      // Checks first, writes after: a database that is refused is left exactly as it was.
      db.pragma(`busy_timeout = ${options.busyTimeoutMs}`);
      assertNotNewer(db, MIGRATIONS);
      store.checkIntegrity(options.integrityCheck, log);
      store.configure(options);
      const migration = migrate(db, MIGRATIONS, log);
      return { store, migration };
    } catch (err) {
      db.close();
      throw classify(err, path, 'open');
    }
  }

  private configure(options: StoreOptions): void {
    const mode = this.db.pragma('journal_mode = WAL', { simple: true });
    if (String(mode).toLowerCase() !== 'wal') {
      throw new StoreOpenError(`database ${this.path} could not switch to WAL mode (got ${String(mode)})`);
    }
    this.db.pragma('foreign_keys = ON');
    this.db.pragma(`journal_size_limit = ${options.journalSizeLimitBytes}`);
    this.db.pragma('synchronous = NORMAL');
  }

  private checkIntegrity(mode: StoreOptions['integrityCheck'], log: Logger): void {
    if (mode === 'off') return;
    const pragma = mode === 'full' ? 'integrity_check' : 'quick_check';
    const rows = this.db.pragma(`${pragma}(20)`) as Record<string, string>[];
    const messages = rows.map((r) => Object.values(r)[0] ?? '');
    if (messages.length === 1 && messages[0] === 'ok') {
      log.debug({ check: pragma }, 'database integrity ok');
      return;
    }
    throw new StoreCorruptError(
      `database ${this.path} failed ${pragma}: ${messages.slice(0, 3).join('; ')}${messages.length > 3 ? ' …' : ''}; ${RECOVERY_HINT}`,
      { details: { path: this.path, problems: messages } },
    );
  }

  /**
   * A transaction at the connection's normal durability (survives a process
   * crash). BEGIN IMMEDIATE: it takes the write lock at once, so a second
   * process writing to the database (the CLI beside the daemon) makes it
   * wait its busy timeout instead of failing with SQLITE_BUSY when a read
   * inside it would have to be upgraded to a write.
   */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  /**
   * A transaction that is on disk (fsynced) when this returns. Use it when
   * anything leaves the process because of what was committed.
   */
  durable<T>(fn: () => T): T {
    if (this.db.inTransaction) throw new Error('durable() cannot be nested inside another transaction');
    // Prepared once: db.pragma() prepares its statement at every call, which costs more than the commit it sets up.
    this.statement('PRAGMA synchronous = FULL').run();
    try {
      return this.db.transaction(fn).immediate();
    } finally {
      this.statement('PRAGMA synchronous = NORMAL').run();
    }
  }

  /** The SQLite library version linked into better-sqlite3. */
  static sqliteVersion(): string {
    const db = new BetterSqlite3(':memory:');
    try {
      return (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
    } finally {
      db.close();
    }
  }

  get open(): boolean {
    return this.db.open;
  }

  /** Checkpoints the WAL into the main file and closes. Safe to call twice. */
  close(): void {
    if (!this.db.open) return;
    try {
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    } finally {
      this.db.close();
    }
  }
}
