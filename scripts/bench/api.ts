import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { hashSecret, newTokenSecret } from '../../agent/api/auth.js';
import { Store } from '../../agent/store/database.js';
import { devicePageQuery, type DeviceFilter, type DeviceOrder } from '../../agent/store/deviceQuery.js';
import { UserRepository } from '../../agent/store/userRepository.js';
import { SEEDED_DEVICES, seedInventory } from './consoleSeed.js';
import type { BenchResult } from './result.js';

/** Rounds of measuring windows, each target in turn: the other processes of a shared machine weigh on all of them alike. */
const ROUNDS = 6;
const WINDOW_MS = 500;
const CONCURRENCY = 8;
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const TICKS_PER_SECOND = 100;
/** The console's script, served from memory: the listener's cost of sending a large body, without the API. */
const STATIC_ASSET = '/assets/app.js';

/** CPU seconds a process has used (user and system), from /proc (Linux). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** What a target did over its windows: calls completed, wall seconds, and CPU seconds of whoever serves it. */
interface Tally {
  calls: number;
  seconds: number;
  cpu: number;
}

/** One thing measured: a window of calls, answering its tally; `close` ends its connections. */
interface Target {
  window(ms: number): Promise<Tally>;
  close(): void;
}

/** Calls `one()` for `ms` milliseconds, `concurrency` at a time: how many completed, in how long. */
async function during(ms: number, concurrency: number, one: () => Promise<void>): Promise<{ calls: number; seconds: number }> {
  let calls = 0;
  const started = performance.now();
  const end = started + ms;
  const worker = async () => {
    while (performance.now() < end) {
      await one();
      calls += 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { calls, seconds: (performance.now() - started) / 1000 };
}

/** GETs of `path` on keep-alive connections, CONCURRENCY at a time; the CPU is the daemon's (`pid`). */
function http(port: number, pid: number, path: string, token?: string): Target {
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const one = () =>
    new Promise<void>((ok, fail) => {
      const req = request({ host: '127.0.0.1', port, path, agent, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? ok() : fail(new Error(`${path}: ${res.statusCode}`))));
      });
      req.on('error', fail);
      req.end();
    });
  return {
    async window(ms) {
      const cpu = cpuSeconds(pid);
      const done = await during(ms, CONCURRENCY, one);
      return { ...done, cpu: cpuSeconds(pid) - cpu };
    },
    close: () => agent.destroy(),
  };
}

/** A synchronous call in this process, one at a time (as the daemon's single SQLite connection runs them); the CPU is this process's. */
function local(call: () => void): Target {
  const one = () => {
    call();
    return Promise.resolve();
  };
  return {
    async window(ms) {
      const cpu = process.cpuUsage();
      const done = await during(ms, 1, one);
      const used = process.cpuUsage(cpu);
      return { ...done, cpu: (used.user + used.system) / 1e6 };
    },
    close: () => undefined,
  };
}

/** Every target in turn, ROUNDS times (after a shorter warm-up round): their tallies. */
async function interleaved(targets: Target[]): Promise<Tally[]> {
  for (const t of targets) await t.window(WINDOW_MS / 5);
  const tallies = targets.map(() => ({ calls: 0, seconds: 0, cpu: 0 }));
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, t] of targets.entries()) {
      const w = await t.window(WINDOW_MS);
      tallies[i]!.calls += w.calls;
      tallies[i]!.seconds += w.seconds;
      tallies[i]!.cpu += w.cpu;
    }
  }
  return tallies;
}

/** One GET: its body as text (as sent: no compression asked), or an error for any status but 200. */
async function getText(port: number, path: string, token?: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    headers: { 'accept-encoding': 'identity', ...(token ? { authorization: `Bearer ${token}` } : {}) },
  });
  if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
  return res.text();
}

/** A technician and an API token of theirs, written through the repository before the daemon's first start (so no first-start admin). */
function addTechnician(dataDir: string): string {
  const { store } = Store.open(
    { path: join(dataDir, 'edge-agent.db'), busyTimeoutMs: 5_000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
    pino({ level: 'silent' }),
  );
  try {
    const secret = newTokenSecret();
    const users = new UserRepository(store);
    store.transaction(() => users.addToken(users.add('console', 'technician', 'bench').id, hashSecret(secret), 'bench', undefined));
    return secret;
  } finally {
    store.close();
  }
}

/** A page request of the bench: its query string, and the filter and order the API makes of it (for the bare query). */
interface PageCase {
  label: string;
  query: string;
  filter: DeviceFilter;
  order?: DeviceOrder;
  limit: number;
  offset: number;
}

/**
 * The devices list a console pages and searches, on the real daemon over
 * loopback with 10,000 devices (seeded through the repository), next to two
 * bounds measured in the same run: GET /healthz on the same listener (the
 * HTTP server alone), and the bare query: the very SQL the endpoint runs
 * (count and page), prepared once and run with better-sqlite3 on the same
 * database file from this process, rows fetched — what SQLite costs. A page
 * whose cost is close to its bare query's is SQLite-bound; one far below is
 * bound by what the daemon does around it (JSON, mapping, authentication).
 * Each ratio is given per CPU-second (the daemon's CPU from /proc for the API,
 * this process's for the bare query: what a request costs, whatever else runs
 * on the machine) and per second of wall time; the targets are measured in
 * interleaved rounds, so that a shared machine's load weighs on all alike.
 * BENCH_API_PROFILE=DIR: the daemon writes a V8 CPU profile there when it stops.
 */
export async function apiBench(): Promise<BenchResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-api-'));
  const dataDir = join(dir, 'data');
  let daemon: ChildProcess | undefined;
  try {
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      [
        'agent:',
        '  id: gw-bench-api',
        `  dataDir: ${dataDir}`,
        'http:',
        '  port: 0',
        // A target's connections wait while the others are measured: longer than a round, so none is closed under a reused request.
        '  keepAliveTimeoutMs: 60000',
        'log:',
        '  level: warn',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        '  enabled: false',
        '',
      ].join('\n'),
    );
    const seeded = seedInventory(dataDir);
    // A technician's token, as the console's users and scripts hold (the first-start admin token reads admin.token at each request).
    const token = addTechnician(dataDir);
    const profile = process.env.BENCH_API_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${resolve(process.env.BENCH_API_PROFILE)}`] : [];
    daemon = spawn(process.execPath, [...profile, join(ROOT, 'agent/main.js'), 'run', '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
    const urlFile = join(dataDir, 'api.url');
    for (const deadline = Date.now() + 60_000; !existsSync(urlFile); ) {
      if (Date.now() > deadline || daemon.exitCode !== null) throw new Error('the daemon did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
    const port = Number(new URL(readFileSync(urlFile, 'utf8').trim()).port);
    // Measured once every service is up: the daemon's start (its CA, its first reports) is not counted against the API.
    for (const deadline = Date.now() + 60_000; (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status !== 200; ) {
      if (Date.now() > deadline || daemon.exitCode !== null) throw new Error('the daemon did not become ready');
      await new Promise((r) => setTimeout(r, 100));
    }

    const fallback = {};
    const search = 'cobalt';
    const cases: PageCase[] = [
      { label: 'first page', query: 'limit=100', filter: { fallback }, limit: 100, offset: 0 },
      { label: 'last page', query: `limit=100&offset=${SEEDED_DEVICES - 100}`, filter: { fallback }, limit: 100, offset: SEEDED_DEVICES - 100 },
      { label: `search q=${search}`, query: `limit=100&q=${search}`, filter: { fallback, q: search }, limit: 100, offset: 0 },
      {
        label: 'state=pending, sort=lastSeen desc, 3rd page',
        query: 'limit=100&offset=200&state=pending&sort=lastSeen&order=desc',
        filter: { fallback, state: 'pending' },
        order: { sort: 'lastSeen', order: 'desc' },
        limit: 100,
        offset: 200,
      },
    ];
    // Each page is what it says (100 items of the expected total) before it is timed.
    const matching = (q: string) => seeded.filter((d) => [d.id, d.manufacturer, d.model, d.serial].some((v) => v.toLowerCase().includes(q))).length;
    const expected = [SEEDED_DEVICES, SEEDED_DEVICES, matching(search), seeded.filter((d) => d.state === 'pending').length];
    const bytes: number[] = [];
    for (const [i, c] of cases.entries()) {
      const text = await getText(port, `/api/v1/devices?${c.query}`, token);
      const page = JSON.parse(text) as { total: number; items: unknown[] };
      if (page.total !== expected[i] || page.items.length !== 100) throw new Error(`${c.query}: ${page.total} devices, ${page.items.length} items`);
      bytes.push(Buffer.byteLength(text));
    }
    const asset = Buffer.byteLength(await getText(port, STATIC_ASSET));

    // The bare queries: the same SQL text, prepared once, rows fetched as arrays as the daemon fetches them (devicePageJson).
    const store = Store.openReadOnly({ path: join(dataDir, 'edge-agent.db'), busyTimeoutMs: 5_000 });
    const pid = daemon.pid!;
    const targets: Target[] = [];
    let tallies: Tally[];
    try {
      targets.push(
        http(port, pid, '/healthz'),
        http(port, pid, STATIC_ASSET),
        http(port, pid, `/api/v1/devices/${encodeURIComponent(seeded[4_321]!.id)}`, token),
        ...cases.flatMap((c) => {
          const q = devicePageQuery(c.filter, c.order, c.offset);
          const count = store.statement(q.count);
          const rows = store.statement(q.rows).raw(true);
          const args = { ...q.args, limit: c.limit, offset: c.offset };
          return [
            local(() => {
              count.get(q.args);
              rows.all(args);
            }),
            http(port, pid, `/api/v1/devices?${c.query}`, token),
          ];
        }),
      );
      tallies = await interleaved(targets);
    } finally {
      for (const t of targets) t.close();
      store.close();
    }

    const fmt = (v: number) => Math.round(v).toLocaleString('en-US');
    const rate = (t: Tally) => t.calls / t.seconds;
    const perCpu = (t: Tally) => t.calls / Math.max(t.cpu, 0.01);
    const [health, file, one] = tallies as [Tally, Tally, Tally];
    const kB = (n: number) => `${(n / 1024).toFixed(0)} kB`;
    const ratios = (t: Tally, bound: Tally) => `${(perCpu(t) / perCpu(bound)).toFixed(2)} per CPU-s, ${(rate(t) / rate(bound)).toFixed(2)} per s`;
    return [
      {
        name: 'api: GET /healthz (no token, no database)',
        value: rate(health),
        unit: 'req/s',
        limit: `${fmt(perCpu(health))} per daemon CPU-second: the HTTP listener alone, the bound of every API row`,
      },
      {
        name: `api: GET ${STATIC_ASSET} (${kB(asset)} from memory, no token)`,
        value: rate(file),
        unit: 'req/s',
        limit: `${fmt(perCpu(file))} per daemon CPU-s: the listener sending a large body from memory; /healthz ratio ${ratios(file, health)}`,
      },
      {
        name: `api: GET /api/v1/devices/{id} (${SEEDED_DEVICES.toLocaleString('en-US')} devices)`,
        value: rate(one),
        unit: 'req/s',
        limit: `${fmt(perCpu(one))} per daemon CPU-s; /healthz ratio ${ratios(one, health)}`,
      },
      ...cases.flatMap((c, i): BenchResult[] => {
        const [bare, api] = [tallies[3 + 2 * i]!, tallies[4 + 2 * i]!];
        return [
          {
            name: `api: bare query: ${c.label} (count + ${c.limit} rows)`,
            value: rate(bare),
            unit: 'q/s',
            limit: `${fmt(perCpu(bare))} per CPU-s: the endpoint's SQL, better-sqlite3 on the same file, this process, one at a time`,
          },
          {
            name: `api: GET /api/v1/devices?${c.query} (${kB(bytes[i]!)})`,
            value: rate(api),
            unit: 'req/s',
            limit: `${fmt(perCpu(api))} per daemon CPU-s; bare query ratio ${ratios(api, bare)}; /healthz ratio ${ratios(api, health)}`,
          },
        ];
      }),
    ];
  } finally {
    if (daemon && daemon.exitCode === null) await new Promise((r) => (daemon!.once('exit', r), daemon!.kill('SIGTERM')));
    rmSync(dir, { recursive: true, force: true });
  }
}
