import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreTooNewError } from '../../agent/errors.js';
import { ActionRepository, crlReasonOf, decisionText, REVOCATION_REASONS } from '../../agent/store/actionRepository.js';
import { Store } from '../../agent/store/database.js';
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

  it(
    'moves the CRL reason of revokes and decommissions queued before version 10 out of their text, ' +
      'so each is carried out with the reason it was queued with',
    () => {
      const db = new BetterSqlite3(path);
      migrate(
        db,
        MIGRATIONS.filter((m) => m.version <= 9),
        log,
      );
      // [kind, text as queued by version 9, CRL reason, note kept, what the history says after the actor]
      const cases: [string, string, string | null, string, string][] = [
        ['revoke', 'keyCompromise: stolen from line 3', 'keyCompromise', 'stolen from line 3', 'keyCompromise: stolen from line 3'],
        ['revoke', 'keyCompromise: note: with a colon', 'keyCompromise', 'note: with a colon', 'keyCompromise: note: with a colon'],
        ['revoke', 'superseded', 'superseded', '', 'superseded'],
        ['revoke', '', 'unspecified', '', ''],
        ['decommission', '', 'cessationOfOperation', '', ''],
        ['decommission', 'privilegeWithdrawn: contract ended', 'privilegeWithdrawn', 'contract ended', 'privilegeWithdrawn: contract ended'],
        // Free text queued before reasons were checked: the kind's default, as the daemon read it; the text is the note.
        ['revoke', 'stolen', 'unspecified', 'stolen', 'unspecified: stolen'],
        ['decommission', 'keycompromise: wrong case', 'cessationOfOperation', 'keycompromise: wrong case', 'cessationOfOperation: keycompromise: wrong case'],
        // Approvals and rejections carry no CRL reason, whatever their text says.
        ['approve', 'keyCompromise: checked on site', null, 'keyCompromise: checked on site', 'keyCompromise: checked on site'],
        ['reject', 'superseded', null, 'superseded', 'superseded'],
      ];
      const insert = db.prepare(
        "INSERT INTO device_actions (device_id, action, actor, reason, requested_at) VALUES ('mqtt:pump-1', ?, 'anna', ?, '2025-01-01T00:00:00.000Z')",
      );
      const ids = cases.map(([kind, text]) => Number(insert.run(kind, text).lastInsertRowid));
      db.close();

      const store = Store.open({ path, busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' }, log).store;
      try {
        const actions = new ActionRepository(store);
        for (const [i, [kind, text, crlReason, note, history]] of cases.entries()) {
          const action = actions.get(ids[i]!)!;
          expect({ crlReason: action.crlReason ?? null, note: action.reason, history: decisionText(action) }, `${kind} "${text}"`).toEqual({
            crlReason,
            note,
            history,
          });
          if (crlReason) expect(crlReasonOf(action)).toBe(crlReason);
        }
        // The column takes the reasons the CRL can carry, on revokes and decommissions only.
        const raw = (kind: string, reason: string) => () =>
          store.db
            .prepare(
              'INSERT INTO device_actions (device_id, action, actor, reason, crl_reason, requested_at) ' +
                "VALUES ('mqtt:pump-1', ?, 'anna', '', ?, '2025-01-01T00:00:00.000Z')",
            )
            .run(kind, reason);
        for (const reason of REVOCATION_REASONS) expect(raw('decommission', reason)).not.toThrow();
        expect(raw('revoke', 'stolen')).toThrow(/CHECK constraint failed/);
        expect(raw('approve', 'keyCompromise')).toThrow(/CHECK constraint failed/);
        // New actions: the reason given, else the kind's default; the note alone in the text.
        expect(actions.enqueue('mqtt:pump-1', 'revoke', 'anna', { reason: 'from line 3', crlReason: 'keyCompromise' })).toMatchObject({
          crlReason: 'keyCompromise',
          reason: 'from line 3',
        });
        expect(actions.enqueue('mqtt:pump-1', 'decommission', 'anna')).toMatchObject({ crlReason: 'cessationOfOperation', reason: '' });
        expect(actions.enqueue('mqtt:pump-1', 'approve', 'anna', { reason: 'ok' }).crlReason).toBeUndefined();
        expect(() => actions.enqueue('mqtt:pump-1', 'approve', 'anna', { crlReason: 'superseded' })).toThrow(/carries no CRL reason/);
      } finally {
        store.close();
      }
    },
  );
});
