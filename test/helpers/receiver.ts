import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { REPO } from './daemon.js';
import { openssl } from './openssl.js';

/**
 * A test PKI for the receiver, made by openssl (not by the agent): a CA and a
 * server certificate for 127.0.0.1, plus a second CA that the receiver does
 * not use (to check that a wrong CA bundle is refused).
 */
export async function receiverPki(dir: string): Promise<{ ca: string; otherCa: string; cert: string; key: string }> {
  const run = async (args: string[]) => {
    const r = await openssl(args, dir);
    if (!r.ok) throw new Error(`openssl ${args[0]}: ${r.stderr}`);
  };
  for (const name of ['cmms-ca', 'other-ca']) {
    await run([
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.crt`,
      '-days',
      '30',
      '-subj',
      `/CN=${name}`,
    ]);
  }
  await run([
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    'receiver.key',
    '-out',
    'receiver.csr',
    '-subj',
    '/CN=cmms.test',
  ]);
  await run([
    'x509',
    '-req',
    '-in',
    'receiver.csr',
    '-CA',
    'cmms-ca.crt',
    '-CAkey',
    'cmms-ca.key',
    '-CAcreateserial',
    '-out',
    'receiver.crt',
    '-days',
    '30',
    '-extfile',
    await extfile(dir),
  ]);
  return { ca: join(dir, 'cmms-ca.crt'), otherCa: join(dir, 'other-ca.crt'), cert: join(dir, 'receiver.crt'), key: join(dir, 'receiver.key') };
}

async function extfile(dir: string): Promise<string> {
  const { writeFileSync } = await import('node:fs');
  const file = join(dir, 'receiver.ext');
  writeFileSync(file, 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  return file;
}

export interface Receiver {
  port: number;
  db: string;
  child: ChildProcess;
  stop(): Promise<void>;
  kill(): Promise<void>;
  /**
   * Goes down (SIGTERM) and comes back on the same port and file with these
   * fault switches instead (scripts/cmms/referenceServer.ts --help), e.g.
   * `['--fail-item', id]` or `['--fail-every', '1']`; none: a healthy receiver.
   */
  restart(args?: string[]): Promise<Receiver>;
  /** What it holds: device id -> revision. */
  holdings(gateway: string): Map<string, number>;
  /** (device, revision) pairs applied more than once: a replay that changed state. */
  appliedTwice(gateway: string): { device_id: string; revision: number; n: number }[];
  /**
   * (device, revision) pairs the receiver took (applied, or stale) under more than one Idempotency-Key: an item
   * the agent sent again in a new batch although an earlier one had delivered it. (A rejected item sent again
   * when a technician asks is not one.)
   */
  sentUnderTwoKeys(gateway: string): { device_id: string; revision: number; keys: number }[];
  /** The records it holds: device id -> the record as received. */
  records(gateway: string): Map<string, Record<string, unknown>>;
  /** The events it stored, in the order they arrived: the eventId and the event as received. */
  events(gateway: string): { eventId: string; event: Record<string, unknown> }[];
  /** Every answer it gave for an event: stored, duplicate or rejected (with the reason). */
  eventResults(gateway: string): { event_id: string; status: string; error: string | null }[];
  /** Batch requests: when the body was in, when it was answered (0: the answer was dropped). */
  requests(): { received_ms: number; at_ms: number; idempotency_key: string | null; status: number }[];
}

/** Starts scripts/cmms-reference-server with `args` (plus --db, --cert, --key, --port) and waits until it listens. */
export async function startReceiver(o: { db: string; cert: string; key: string; port?: number; args?: string[]; base?: string[] }): Promise<Receiver> {
  const child = spawn(
    process.execPath,
    [
      join(REPO, 'dist/scripts/cmms/referenceServer.js'),
      '--db',
      o.db,
      '--cert',
      o.cert,
      '--key',
      o.key,
      '--port',
      String(o.port ?? 0),
      ...(o.base ?? []),
      ...(o.args ?? []),
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{"port"'));
      if (line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`the receiver exited (${code}): ${stderr}`)));
  });
  const read = <T>(sql: string, ...params: unknown[]): T[] => {
    const db = new Database(o.db, { readonly: true, fileMustExist: true });
    try {
      return db.prepare(sql).all(...params) as T[];
    } finally {
      db.close();
    }
  };
  const ended = new Promise((r) => child.once('exit', r));
  return {
    port,
    db: o.db,
    child,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await ended;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await ended;
    },
    async restart(args: string[] = []) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await ended;
      return startReceiver({ ...o, port, args });
    },
    holdings: (gateway) =>
      new Map(
        read<{ device_id: string; revision: number }>('SELECT device_id, revision FROM devices WHERE gateway_id = ?', gateway).map((r) => [
          r.device_id,
          r.revision,
        ]),
      ),
    appliedTwice: (gateway) =>
      read('SELECT device_id, revision, count(*) AS n FROM apply_log WHERE gateway_id = ? GROUP BY device_id, revision HAVING n > 1', gateway),
    sentUnderTwoKeys: (gateway) =>
      read(
        'SELECT device_id, revision, count(DISTINCT idempotency_key) AS keys FROM item_results ' +
          "WHERE gateway_id = ? AND status IN ('applied', 'stale') GROUP BY device_id, revision HAVING keys > 1",
        gateway,
      ),
    records: (gateway) =>
      new Map(
        read<{ device_id: string; record: string }>('SELECT device_id, record FROM devices WHERE gateway_id = ?', gateway).map((r) => [
          r.device_id,
          JSON.parse(r.record) as Record<string, unknown>,
        ]),
      ),
    events: (gateway) =>
      read<{ event_id: string; body: string }>('SELECT event_id, body FROM events WHERE gateway_id = ? ORDER BY seq', gateway).map((r) => ({
        eventId: r.event_id,
        event: JSON.parse(r.body) as Record<string, unknown>,
      })),
    eventResults: (gateway) => read('SELECT event_id, status, error FROM event_results WHERE gateway_id = ? ORDER BY rowid', gateway),
    requests: () => read('SELECT received_ms, at_ms, idempotency_key, status FROM requests ORDER BY rowid'),
  };
}
