import { closeSync, existsSync, fsyncSync, openSync, realpathSync, renameSync, rmSync, statSync, chmodSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { BackupError } from '../errors.js';

export interface BackupResult {
  source: string;
  destination: string;
  bytes: number;
  pages: number;
  schemaVersion: number;
  integrity: 'ok';
  durationMs: number;
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Copies a live database with SQLite's online backup API: readers and the
 * running daemon's writes go on, and the copy is one consistent snapshot.
 * The copy is written beside the destination, checked with
 * `PRAGMA integrity_check`, switched to a single-file journal, fsynced and
 * only then renamed into place, so a failed or interrupted backup never
 * leaves a half-written file under the destination name.
 */
export async function backupDatabase(options: { source: string; destination: string; force?: boolean; busyTimeoutMs: number }): Promise<BackupResult> {
  const started = performance.now();
  const source = resolve(options.source);
  const destination = resolve(options.destination);
  if (!existsSync(source)) throw new BackupError(`database ${source} does not exist: nothing to back up`);
  if (!existsSync(dirname(destination))) throw new BackupError(`directory ${dirname(destination)} does not exist`);
  if (existsSync(destination)) {
    if (realpathSync(destination) === realpathSync(source)) throw new BackupError('the backup cannot overwrite the database itself');
    if (!options.force) throw new BackupError(`${destination} already exists; choose another path or pass --force`);
    if (!statSync(destination).isFile()) throw new BackupError(`${destination} exists and is not a regular file`);
  }

  const partial = `${destination}.partial-${process.pid}`;
  const db = new BetterSqlite3(source, { fileMustExist: true, timeout: options.busyTimeoutMs });
  try {
    // Large steps keep the number of steps small: a write by another
    // connection between two steps makes SQLite restart the copy.
    const progress = await db.backup(partial, { progress: () => 0x7fffffff });
    const copy = new BetterSqlite3(partial, { fileMustExist: true });
    let schemaVersion: number;
    try {
      const check = (copy.pragma('integrity_check') as Record<string, string>[]).map((r) => Object.values(r)[0]);
      if (check.length !== 1 || check[0] !== 'ok') {
        throw new BackupError(`the copy failed integrity_check: ${check.slice(0, 3).join('; ')}`);
      }
      copy.pragma('journal_mode = DELETE');
      schemaVersion = Number(copy.pragma('user_version', { simple: true }));
    } finally {
      copy.close();
    }
    chmodSync(partial, 0o600);
    fsyncPath(partial);
    renameSync(partial, destination);
    fsyncPath(dirname(destination));
    return {
      source,
      destination,
      bytes: statSync(destination).size,
      pages: progress.totalPages,
      schemaVersion,
      integrity: 'ok',
      durationMs: Math.round(performance.now() - started),
    };
  } catch (err) {
    rmSync(partial, { force: true });
    rmSync(`${partial}-wal`, { force: true });
    rmSync(`${partial}-shm`, { force: true });
    if (err instanceof BackupError) throw err;
    throw new BackupError(`backup of ${source} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    db.close();
  }
}
