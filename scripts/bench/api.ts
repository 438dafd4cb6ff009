import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import type { BenchResult } from './result.js';

const DEVICES = 1_000;
const REQUESTS = 4_000;
const CONCURRENCY = 8;
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** `REQUESTS` GETs of `path()` on keep-alive connections, `CONCURRENCY` at a time; answers per second. */
async function rate(port: number, path: (i: number) => string, token?: string): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  let next = 0;
  const one = (i: number) =>
    new Promise<void>((ok, fail) => {
      const req = request({ host: '127.0.0.1', port, path: path(i), agent, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? ok() : fail(new Error(`${path(i)}: ${res.statusCode}`))));
      });
      req.on('error', fail);
      req.end();
    });
  const worker = async () => {
    for (let i = next++; i < REQUESTS; i = next++) await one(i);
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  return REQUESTS / seconds;
}

/**
 * The local API of the real daemon on loopback: authenticated reads of one
 * device (token lookup, role check, router, SQLite) and of a page of 100,
 * next to /healthz on the same listener in the same run (no token, no
 * database): what the API costs on top of the HTTP server itself.
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
        'log:',
        '  level: warn',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        '  enabled: false',
        '',
      ].join('\n'),
    );
    const { store } = Store.open(
      { path: join(dataDir, 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    );
    const devices = new DeviceRepository(store);
    store.transaction(() => {
      for (let i = 0; i < DEVICES; i++)
        devices.apply({
          protocol: 'mqtt',
          name: `meter-${i}`,
          to: 'discovered',
          cause: 'bench',
          actor: 'bench',
          patch: { nameplate: { manufacturer: 'ACME', model: 'M1', serialNumber: `SN-${i}` } },
        });
    });
    store.close();
    daemon = spawn(process.execPath, [join(ROOT, 'agent/main.js'), 'run', '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
    const urlFile = join(dataDir, 'api.url');
    for (const deadline = Date.now() + 60_000; !existsSync(urlFile); ) {
      if (Date.now() > deadline || daemon.exitCode !== null) throw new Error('the daemon did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
    const port = Number(new URL(readFileSync(urlFile, 'utf8').trim()).port);
    const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
    await rate(port, () => '/healthz');
    const health = await rate(port, () => '/healthz');
    const one = await rate(port, (i) => `/api/v1/devices/mqtt:meter-${i % DEVICES}`, token);
    const page = await rate(port, (i) => `/api/v1/devices?limit=100&offset=${(i * 100) % DEVICES}`, token);
    const limit = `GET /healthz on the same listener, same run: ${Math.round(health).toLocaleString('en-US')}/s`;
    return [
      {
        name: `api: GET /api/v1/devices/{id} (token, role, SQLite; ${DEVICES} devices)`,
        value: one,
        unit: 'req/s',
        limit: `${limit} (ratio ${(one / health).toFixed(2)})`,
      },
      { name: 'api: GET /api/v1/devices?limit=100 (a page of 100)', value: page, unit: 'req/s', limit: `${limit} (ratio ${(page / health).toFixed(2)})` },
    ];
  } finally {
    if (daemon && daemon.exitCode === null) await new Promise((r) => (daemon!.once('exit', r), daemon!.kill('SIGTERM')));
    rmSync(dir, { recursive: true, force: true });
  }
}
