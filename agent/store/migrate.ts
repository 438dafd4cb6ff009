import type BetterSqlite3 from 'better-sqlite3';
import { StoreTooNewError, InternalError } from '../errors.js';
import type { Logger } from '../log.js';
import { AGENT_VERSION } from '../version.js';

export interface Migration {
  /** 1, 2, 3 … with no gaps; the schema version after this migration. */
  version: number;
  name: string;
  sql: string;
}

export interface MigrationResult {
  from: number;
  to: number;
  applied: number[];
}

/** The schema version this build creates and understands. */
export function latestVersion(migrations: readonly Migration[]): number {
  return migrations.reduce((max, m) => Math.max(max, m.version), 0);
}

/** Reads the schema version (a read only) and refuses one newer than this build. */
export function assertNotNewer(db: BetterSqlite3.Database, migrations: readonly Migration[]): number {
  const latest = latestVersion(migrations);
  const current = Number(db.pragma('user_version', { simple: true }));
  if (current > latest) {
    throw new StoreTooNewError(
      `database schema version ${current} is newer than this edge-agent ${AGENT_VERSION} supports (${latest}); ` +
        'run the newer edge-agent that wrote it, or restore a backup made by this version',
      { details: { databaseVersion: current, supportedVersion: latest } },
    );
  }
  return current;
}

/**
 * Brings the database to the newest schema in one transaction, at
 * synchronous=FULL, recording each step in `schema_migrations` and the
 * version in `PRAGMA user_version`. A database whose version is newer than
 * this build is refused untouched: running old code on a newer schema could
 * silently drop what the newer agent stored.
 */
export function migrate(db: BetterSqlite3.Database, migrations: readonly Migration[], log: Logger): MigrationResult {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new InternalError(`migration list is not numbered 1..n: position ${i + 1} holds ${m.version}`);
  });
  const latest = latestVersion(migrations);
  const current = assertNotNewer(db, migrations);
  const pending = migrations.filter((m) => m.version > current);
  if (pending.length === 0) return { from: current, to: current, applied: [] };

  db.pragma('synchronous = FULL');
  try {
    db.transaction(() => {
      db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        applied_at TEXT NOT NULL,
        agent_version TEXT NOT NULL
      ) STRICT`);
      const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at, agent_version) VALUES (?, ?, ?, ?)');
      for (const m of pending) {
        db.exec(m.sql);
        record.run(m.version, m.name, new Date().toISOString(), AGENT_VERSION);
      }
      db.pragma(`user_version = ${latest}`);
    })();
  } finally {
    db.pragma('synchronous = NORMAL');
  }
  const applied = pending.map((m) => m.version);
  log.info({ from: current, to: latest, applied }, 'database migrated');
  return { from: current, to: latest, applied };
}
