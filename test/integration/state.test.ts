import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { latestVersion } from '../../agent/store/migrate.js';
import { MIGRATIONS } from '../../agent/store/migrations/index.js';
import { Daemon, runCli, tempDir, writeConfig } from '../helpers/daemon.js';
import { pollUntil } from '../helpers/waiters.js';

const LATEST = latestVersion(MIGRATIONS);

describe('state on disk across restarts, corruption and backups', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemons: Daemon[];
  let cleanups: (() => void)[];
  let file: string;
  let dbPath: string;

  beforeEach(() => {
    tmp = tempDir();
    daemons = [];
    cleanups = [];
    file = writeConfig(tmp.dir);
    dbPath = join(tmp.dir, 'data', 'edge-agent.db');
  });
  afterEach(async () => {
    for (const d of daemons) await d.dispose();
    for (const c of cleanups) c();
    tmp.cleanup();
  });

  const start = () => {
    const d = Daemon.start(file);
    daemons.push(d);
    return d;
  };

  it('keeps what was written before a kill -9 and reports the unclean stop at the next start', async () => {
    const first = start();
    await first.ready();
    // Let a heartbeat (every 200 ms) land on disk, then cut the process like a power cut would.
    await first.waitForLog((l) => l.msg === 'run recorded');
    await pollUntil(
      () => {
        const db = new BetterSqlite3(dbPath, { readonly: true, timeout: 1_000 });
        try {
          const run = db.prepare('SELECT started_at, last_heartbeat_at FROM agent_runs WHERE id = 1').get() as
            | { started_at: string; last_heartbeat_at: string }
            | undefined;
          return run && Date.parse(run.last_heartbeat_at) > Date.parse(run.started_at) ? true : undefined;
        } finally {
          db.close();
        }
      },
      { message: () => 'no heartbeat after the start row reached the database' },
    );
    first.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');

    const second = start();
    await second.ready();
    const unclean = await second.waitForLog((l) => l.msg.startsWith('previous run did not stop cleanly'));
    expect(unclean.runId).toBe(1);
    expect(unclean.previousPid).toBe(first.child.pid);
    second.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);

    const db = new BetterSqlite3(dbPath, { readonly: true });
    const runs = db.prepare('SELECT id, pid, started_at, last_heartbeat_at, stop_reason FROM agent_runs ORDER BY id').all() as {
      id: number;
      pid: number;
      started_at: string;
      last_heartbeat_at: string;
      stop_reason: string;
    }[];
    db.close();
    expect(runs.map((r) => [r.id, r.pid, r.stop_reason])).toEqual([
      [1, first.child.pid, 'unclean'],
      [2, second.child.pid, 'stopped'],
    ]);
    // Heartbeats after the start row were on disk too: the last one is later than the start.
    expect(Date.parse(runs[0]!.last_heartbeat_at)).toBeGreaterThan(Date.parse(runs[0]!.started_at));
  });

  it('refuses a file that is not a SQLite database, with exit 65 and the path in the message', async () => {
    const d0 = start();
    await d0.ready();
    d0.kill('SIGTERM');
    await d0.exited;
    writeFileSync(dbPath, 'this is not a database, it is a text file '.repeat(200));
    const d = start();
    const exit = await d.exited;
    expect(exit.code).toBe(65);
    expect(d.stderr).toContain(`database ${dbPath} is corrupt or not a SQLite database`);
    expect(d.logs.some((l) => l.msg === 'edge-agent ready')).toBe(false);
  });

  it('refuses a database whose pages were damaged (integrity check at start), with exit 65', async () => {
    // Build a database with enough rows in an indexed table that damage lands in b-tree pages.
    const d0 = start();
    await d0.ready();
    d0.kill('SIGTERM');
    await d0.exited;
    const db = new BetterSqlite3(dbPath);
    db.exec('CREATE TABLE filler (id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX filler_v ON filler (v)');
    const insert = db.prepare('INSERT INTO filler (v) VALUES (?)');
    db.transaction(() => {
      for (let i = 0; i < 5000; i++) insert.run(`value-${i}-${'x'.repeat(40)}`);
    })();
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.close();
    // Overwrite the middle of the file (past the header and schema page) with garbage.
    const size = statSync(dbPath).size;
    const fd = openSync(dbPath, 'r+');
    const garbage = Buffer.alloc(8192, 0xa5);
    writeSync(fd, garbage, 0, garbage.length, Math.floor(size / 2 / 4096) * 4096);
    closeSync(fd);

    const d = start();
    const exit = await d.exited;
    expect(exit.code).toBe(65);
    expect(d.stderr).toMatch(/corrupt|failed quick_check/);
    expect(d.stderr).toContain(dbPath);
  });

  it('refuses a database written by a newer agent (schema version above this build), leaving the file byte for byte as it was', async () => {
    const d0 = start();
    await d0.ready();
    d0.kill('SIGTERM');
    await d0.exited;
    // A rollback-journal (DELETE mode) database, as a backup is: opening it
    // in WAL mode would rewrite its header, so the refusal must come first.
    const db = new BetterSqlite3(dbPath);
    db.pragma('journal_mode = DELETE');
    db.pragma('user_version = 999');
    db.close();
    const before = createHash('sha256').update(readFileSync(dbPath)).digest('hex');

    const d = start();
    const exit = await d.exited;
    expect(exit.code).toBe(65);
    expect(d.stderr).toMatch(new RegExp(`database schema version 999 is newer than this edge-agent .* supports \\(${LATEST}\\)`));
    expect(createHash('sha256').update(readFileSync(dbPath)).digest('hex')).toBe(before);
    expect(existsSync(`${dbPath}-wal`)).toBe(false);
  });

  it('refuses to start a second agent on the same data directory, and leaves the run of the first one alone', async () => {
    const first = start();
    await first.ready();
    const second = Daemon.start(writeConfig(join(tmp.dir), undefined, 'second.yaml'));
    daemons.push(second);
    const exit = await second.exited;
    expect(exit.code).toBe(1);
    expect(second.stderr).toContain(`another edge-agent (pid ${first.child.pid}) is using ${join(tmp.dir, 'data')}`);
    expect(second.logs.some((l) => l.msg.startsWith('previous run did not stop cleanly'))).toBe(false);
    first.kill('SIGTERM');
    expect((await first.exited).code).toBe(0);
    const db = new BetterSqlite3(dbPath, { readonly: true });
    expect(db.prepare('SELECT id, stop_reason FROM agent_runs').all()).toEqual([{ id: 1, stop_reason: 'stopped' }]);
    db.close();
    expect(existsSync(join(tmp.dir, 'data', 'edge-agent.pid'))).toBe(false);
  });

  it('backs up while the daemon and another writer commit, and each copy passes integrity_check', async () => {
    const d = start();
    await d.ready();
    // A second process writes steadily into the same database during the backups.
    const writer = spawn(
      process.execPath,
      [
        '-e',
        `const D = require('better-sqlite3');
         const db = new D(process.argv[1], { timeout: 5000 });
         db.exec('CREATE TABLE IF NOT EXISTS load (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)');
         const ins = db.prepare('INSERT INTO load (payload) VALUES (?)');
         const end = Date.now() + 60000;
         const tick = () => { if (Date.now() > end) return db.close();
           db.transaction(() => { for (let i = 0; i < 50; i++) ins.run('p'.repeat(200)); })();
           setImmediate(tick); };
         tick();`,
        dbPath,
      ],
      { cwd: process.cwd(), stdio: 'inherit' },
    );
    cleanups.push(() => writer.kill('SIGKILL'));
    const writerDone = new Promise((r) => writer.on('exit', r));
    // The writer's first transactions are committed before the first backup.
    await pollUntil(
      () => {
        const db = new BetterSqlite3(dbPath, { readonly: true, timeout: 1_000 });
        try {
          return (db.prepare('SELECT count(*) AS n FROM load').get() as { n: number }).n > 0 ? true : undefined;
        } finally {
          db.close();
        }
      },
      { message: () => 'the writer committed nothing' },
    );

    for (let i = 0; i < 3; i++) {
      const target = join(tmp.dir, `backup-${i}.db`);
      const result = await runCli(['backup', target, '--config', file, '--json']);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      const summary = JSON.parse(result.stdout) as { integrity: string; schemaVersion: number; destination: string };
      expect(summary).toMatchObject({ integrity: 'ok', schemaVersion: LATEST, destination: target });
      // Checked again here, independently of the agent's own check.
      const copy = new BetterSqlite3(target, { readonly: true });
      expect(copy.pragma('integrity_check', { simple: true })).toBe('ok');
      const load = copy.prepare('SELECT count(*) AS n, max(id) AS top FROM load').get() as { n: number; top: number };
      expect(load.n).toBeGreaterThan(0);
      // Whole transactions only: 50 rows each, ids without gaps.
      expect(load.n % 50).toBe(0);
      expect(load.top).toBe(load.n);
      expect(copy.prepare('SELECT count(*) AS n FROM agent_runs').get()).toEqual({ n: 1 });
      expect(copy.pragma('journal_mode', { simple: true })).toBe('delete');
      copy.close();
      expect(statSync(target).mode & 0o777).toBe(0o600);
    }
    expect(writer.exitCode).toBeNull();
    writer.kill('SIGTERM');
    await writerDone;
    expect(d.child.exitCode).toBeNull();
    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(0);
  });

  it('refuses to overwrite an existing backup file without --force, and leaves no partial file on failure', async () => {
    const d = start();
    await d.ready();
    const target = join(tmp.dir, 'existing.db');
    writeFileSync(target, 'keep me');
    const refused = await runCli(['backup', target, '--config', file]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('already exists; choose another path or pass --force');
    const forced = await runCli(['backup', target, '--config', file, '--force']);
    expect(forced.code).toBe(0);
    expect(forced.stdout).toMatch(/^backup written: /);
    const noDir = await runCli(['backup', join(tmp.dir, 'missing-dir', 'x.db'), '--config', file]);
    expect(noDir.code).toBe(1);
    expect(noDir.stderr).toContain('does not exist');
    expect(existsSync(join(tmp.dir, 'missing-dir'))).toBe(false);
  });
});
