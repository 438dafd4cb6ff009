import { accessSync, chmodSync, constants, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { StoreAccessError, StoreCorruptError, StoreMissingError, StoreNotMigratedError, StoreOpenError, InternalError } from '../errors.js';
import type { Logger } from '../log.js';
import { assertNotNewer, latestVersion, migrate, type MigrationResult } from './migrate.js';
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
export function classify(err: unknown, path: string, step: string): unknown {
  const code = (err as { code?: string }).code;
  if (code !== undefined && CORRUPTION_CODES.has(code)) {
    return new StoreCorruptError(
      `database ${path} is corrupt or not a SQLite database (${code}: ${(err as Error).message}, during ${step}); ${RECOVERY_HINT}`,
      {
        cause: err,
        details: { path, sqliteCode: code },
      },
    );
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
  /** What afterCommit queued in the transaction under way, by key. */
  private readonly onCommit = new Map<string, () => void>();
  /** Whether reading() holds a read transaction open. */
  private snapshot = false;

  private constructor(
    readonly db: Sqlite,
    readonly path: string,
    /** Opened by openReadOnly(): nothing can be written through it. */
    readonly readOnly = false,
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
   * if needed), sets pragmas, checks integrity and applies migrations. With
   * `create: false` (the CLI's changes on the database) a missing database is
   * refused with StoreMissingError instead: only the daemon creates it.
   */
  static open(options: StoreOptions, log: Logger, how: { create?: boolean } = {}): { store: Store; migration: MigrationResult } {
    const { path } = options;
    if (how.create === false) mustExist(path);
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

  /**
   * Opens an existing database for reading only: it never creates the file,
   * never migrates and never writes (the CLI's reads when the daemon is
   * down). A database of another schema than this build's is refused: a
   * newer one with StoreTooNewError, an older one with StoreNotMigratedError
   * (the daemon migrates it at its start).
   *
   * WAL: a read-only connection needs the `-shm` file beside the database.
   * When the daemon is not running it is usually absent and SQLite creates
   * it (and an empty `-wal`), which needs a writable directory; as root,
   * SQLite gives both to the database file's owner, so the daemon's user can
   * use them afterwards. Where this user cannot create them the open fails
   * with SQLITE_CANTOPEN or SQLITE_READONLY_DIRECTORY: reported as
   * StoreAccessError with what to do.
   */
  static openReadOnly(options: Pick<StoreOptions, 'path' | 'busyTimeoutMs'>): Store {
    const { path } = options;
    mustExist(path);
    let db: Sqlite | undefined;
    try {
      db = new BetterSqlite3(path, { readonly: true, fileMustExist: true, timeout: options.busyTimeoutMs });
      // The first read opens the WAL index: where the -shm problems show.
      const current = assertNotNewer(db, MIGRATIONS);
      const latest = latestVersion(MIGRATIONS);
      if (current < latest) {
        throw new StoreNotMigratedError(
          `database ${path} has schema version ${current}, older than this edge-agent's (${latest}); ` +
            'the daemon migrates it when it starts (systemctl start edge-agent), a read leaves it as it is',
          { details: { path, databaseVersion: current, supportedVersion: latest } },
        );
      }
      return new Store(db, path, true);
    } catch (err) {
      db?.close();
      const code = (err as { code?: string }).code;
      if (code === 'SQLITE_CANTOPEN' || code === 'SQLITE_READONLY_DIRECTORY' || code === 'SQLITE_READONLY_CANTINIT' || code === 'SQLITE_PERM') {
        throw new StoreAccessError(
          `cannot read database ${path} (${code}): with the daemon stopped, SQLite must create ${path}-shm beside it, ` +
            `and this user may not write in ${dirname(path)}; run the command as the agent's user or root, or start the daemon`,
          { cause: err, details: { path, sqliteCode: code } },
        );
      }
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
    // Statement and savepoint journals in memory, not in temporary files: they only let one statement or
    // savepoint roll back inside a transaction (a crash is recovered from the WAL), and as files every
    // statement that fires a trigger wrote its pages to disk: a new device cost 37 µs instead of 10.
    this.db.pragma('temp_store = MEMORY');
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
    this.endReading();
    return this.committing(() => this.db.transaction(fn).immediate());
  }

  /**
   * Runs `fn` with its reads in one read transaction: one lock of the WAL
   * instead of one per statement (each costs two fcntl calls and the WAL
   * index's checks; an enrollment request's checks are half a dozen reads).
   * Only what `fn` does before it returns is inside (for an async `fn`,
   * up to its first await). A transaction() or durable() inside ends the
   * read transaction before it begins, so writes are never part of it:
   * `fn` must write only through them (an autocommit write would join the
   * read transaction; PRAGMA query_only cannot guard it, as setting it
   * expires every prepared statement of the connection).
   */
  reading<T>(fn: () => T): T {
    if (this.db.inTransaction || this.readOnly) return fn();
    this.statement('BEGIN DEFERRED').run();
    this.snapshot = true;
    try {
      return fn();
    } finally {
      this.endReading();
    }
  }

  private endReading(): void {
    if (!this.snapshot) return;
    this.snapshot = false;
    if (this.db.inTransaction) this.statement('COMMIT').run();
  }

  /**
   * Runs `fn` once the transaction under way commits, at once outside one;
   * drops it if the transaction rolls back. What tells others of a change
   * (an event on the bus) goes here, so it is never heard before the change
   * is on disk. A second call with the same key in one transaction is one
   * call. A savepoint rolled back inside a transaction that commits does not
   * drop it: a listener treats what it hears as a reason to look, and reads
   * the tables for what is so. `fn` must not throw (the bus's emit never
   * does): the change it follows is committed already.
   */
  afterCommit(key: string, fn: () => void): void {
    if (!this.db.inTransaction) return fn();
    this.onCommit.set(key, fn);
  }

  /** Runs an outermost transaction, then what afterCommit queued in it (or drops that if it threw). */
  private committing<T>(run: () => T): T {
    if (this.db.inTransaction) return run();
    let result: T;
    try {
      result = run();
    } catch (err) {
      this.onCommit.clear();
      throw err;
    }
    const queued = [...this.onCommit.values()];
    this.onCommit.clear();
    for (const fn of queued) fn();
    return result;
  }

  /**
   * A transaction that is on disk (fsynced) when this returns. Use it when
   * anything leaves the process because of what was committed.
   */
  durable<T>(fn: () => T): T {
    this.endReading();
    if (this.db.inTransaction) throw new InternalError('durable() cannot be nested inside another transaction');
    return this.committing(() => {
      // Prepared once: db.pragma() prepares its statement at every call, which costs more than the commit it sets up.
      this.statement('PRAGMA synchronous = FULL').run();
      try {
        return this.db.transaction(fn).immediate();
      } finally {
        this.statement('PRAGMA synchronous = NORMAL').run();
      }
    });
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
    if (this.readOnly) return void this.db.close();
    try {
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    } finally {
      this.db.close();
    }
  }
}

/**
 * Refuses a database path that does not exist (StoreMissingError) or that
 * this user may not read (StoreAccessError), before SQLite would create it
 * or answer with its generic "unable to open database file".
 */
function mustExist(path: string): void {
  try {
    statSync(path);
    accessSync(path, constants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new StoreMissingError(`database ${path} does not exist`, { cause: err, details: { path } });
    }
    if (code === 'EACCES' || code === 'EPERM') {
      throw new StoreAccessError(`cannot read database ${path}: permission denied; run the command as the agent's user or root`, {
        cause: err,
        details: { path },
      });
    }
    throw new StoreOpenError(`cannot open database ${path}: ${(err as Error).message}`, { cause: err, details: { path } });
  }
}
