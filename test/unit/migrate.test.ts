import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreTooNewError } from '../../agent/errors.js';
import { latestVersion, migrate, type Migration } from '../../agent/store/migrate.js';
import { MIGRATIONS } from '../../agent/store/migrations/index.js';
import { tempDir } from '../helpers/daemon.js';

const log = pino({ level: 'silent' });

describe('numbered migrations', () => {
  let tmp: ReturnType<typeof tempDir>;
  let path: string;
  beforeEach(() => {
    tmp = tempDir();
    path = join(tmp.dir, 'm.db');
  });
  afterEach(() => tmp.cleanup());

  it('brings a fresh database to the latest version and records every step', () => {
    const db = new BetterSqlite3(path);
    const result = migrate(db, MIGRATIONS, log);
    expect(result).toEqual({ from: 0, to: latestVersion(MIGRATIONS), applied: MIGRATIONS.map((m) => m.version) });
    expect(db.pragma('user_version', { simple: true })).toBe(latestVersion(MIGRATIONS));
    const rows = db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all();
    expect(rows).toEqual(MIGRATIONS.map((m) => ({ version: m.version, name: m.name })));
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'agent_runs'").get()).toEqual({ name: 'agent_runs' });
    db.close();
  });

  it('leaves an up-to-date database as it is', () => {
    const db = new BetterSqlite3(path);
    migrate(db, MIGRATIONS, log);
    const changesBefore = db.prepare('SELECT count(*) AS n FROM schema_migrations').get();
    const latest = latestVersion(MIGRATIONS);
    expect(migrate(db, MIGRATIONS, log)).toEqual({ from: latest, to: latest, applied: [] });
    expect(db.prepare('SELECT count(*) AS n FROM schema_migrations').get()).toEqual(changesBefore);
    db.close();
  });

  it('applies only the pending migrations of a database one version behind', () => {
    const db = new BetterSqlite3(path);
    migrate(db, MIGRATIONS, log);
    const latest = latestVersion(MIGRATIONS);
    const next: Migration[] = [...MIGRATIONS, { version: latest + 1, name: 'extra', sql: 'CREATE TABLE extra (x INTEGER) STRICT' }];
    expect(migrate(db, next, log)).toEqual({ from: latest, to: latest + 1, applied: [latest + 1] });
    expect(db.pragma('user_version', { simple: true })).toBe(latest + 1);
    db.close();
  });

  it('refuses a database newer than the code and changes nothing in it', () => {
    const db = new BetterSqlite3(path);
    migrate(db, MIGRATIONS, log);
    db.pragma('user_version = 70');
    expect(() => migrate(db, MIGRATIONS, log)).toThrow(StoreTooNewError);
    expect(() => migrate(db, MIGRATIONS, log)).toThrow(
      new RegExp(`schema version 70 is newer than this edge-agent .* supports \\(${latestVersion(MIGRATIONS)}\\)`),
    );
    expect(db.pragma('user_version', { simple: true })).toBe(70);
    db.close();
  });

  it('rolls back every step when one migration fails, so the version never half-moves', () => {
    const db = new BetterSqlite3(path);
    const broken: Migration[] = [
      { version: 1, name: 'good', sql: 'CREATE TABLE good (x INTEGER)' },
      { version: 2, name: 'bad', sql: 'CREATE TABLE oops (x INTEGER); INSERT INTO missing_table VALUES (1)' },
    ];
    expect(() => migrate(db, broken, log)).toThrow(/no such table: missing_table/);
    expect(db.pragma('user_version', { simple: true })).toBe(0);
    expect(db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all()).toEqual([]);
    db.close();
  });

  it('refuses a migration list with gaps in its numbering', () => {
    const db = new BetterSqlite3(path);
    const gap: Migration[] = [
      { version: 1, name: 'one', sql: 'SELECT 1' },
      { version: 3, name: 'three', sql: 'SELECT 1' },
    ];
    expect(() => migrate(db, gap, log)).toThrow(/not numbered 1..n: position 2 holds 3/);
    db.close();
  });
});
