import BetterSqlite3 from 'better-sqlite3';
import { Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Daemon, tempDir, writeConfig } from '../helpers/daemon.js';
import { NotifyCapture } from '../helpers/notifySocket.js';

describe('the daemon under a captured NOTIFY_SOCKET', () => {
  let tmp: ReturnType<typeof tempDir>;
  let notify: NotifyCapture;
  let daemon: Daemon | undefined;

  beforeEach(async () => {
    tmp = tempDir();
    notify = await NotifyCapture.start(tmp.dir);
  });
  afterEach(async () => {
    await daemon?.dispose();
    daemon = undefined;
    await notify.close();
    tmp.cleanup();
  });

  it('reports STATUS while starting, READY=1 once every service is up, watchdog pings, and STOPPING=1 then exit 0 on SIGTERM', async () => {
    daemon = Daemon.start(writeConfig(tmp.dir), {
      env: { NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: '400000' },
    });
    const base = await daemon.ready();

    const ready = await notify.waitFor((n) => n.fields.READY === '1');
    expect(ready.fields.STATUS).toMatch(/^Running: 10 services up/);
    expect(ready.pid).toBe(daemon.child.pid);
    const readyIndex = notify.messages.indexOf(ready);
    const statuses = notify.messages
      .slice(0, readyIndex)
      .map((n) => n.fields.STATUS)
      .filter(Boolean);
    expect(statuses).toEqual([
      'Starting lock',
      'Starting store',
      'Starting runs',
      'Starting ca',
      'Starting report',
      'Starting mqtt',
      'Starting opcua',
      'Starting configuration',
      'Starting sessions',
      'Starting http',
    ]);

    // WATCHDOG_USEC=400ms: pings every 200 ms; wait for three after readiness.
    for (let i = 0; i < 3; i++) {
      await notify.waitFor((n) => n.fields.WATCHDOG === '1', 5_000, notify.messages.length);
    }

    const ready_ = await fetch(`${base}/readyz`);
    expect(ready_.status).toBe(200);
    const body = (await ready_.json()) as { status: string; services: { name: string; state: string }[] };
    expect(body.status).toBe('ready');
    expect(body.services.map((s) => [s.name, s.state])).toEqual([
      ['lock', 'up'],
      ['store', 'up'],
      ['runs', 'up'],
      ['ca', 'up'],
      ['report', 'up'],
      ['mqtt', 'up'],
      ['opcua', 'up'],
      ['configuration', 'up'],
      ['sessions', 'up'],
      ['http', 'up'],
    ]);
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(((await health.json()) as { status: string }).status).toBe('ok');

    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/^edge_agent_service_up\{service="store"\} 1$/m);
    expect(metrics).toMatch(/^edge_agent_service_up\{service="http"\} 1$/m);
    expect(metrics).toMatch(/^edge_agent_process_resident_memory_bytes \d+/m);

    daemon.kill('SIGTERM');
    const exit = await daemon.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    const stopping = await notify.waitFor((n) => n.fields.STOPPING === '1');
    expect(stopping.fields.STATUS).toBe('Stopping (signal SIGTERM)');
    expect(daemon.logs.map((l) => l.msg)).toContain('edge-agent stopped');
  });

  it('stops with exit 0 on SIGINT, as Ctrl-C in a terminal does, and pings no watchdog the unit did not ask for', async () => {
    daemon = Daemon.start(writeConfig(tmp.dir), { env: { NOTIFY_SOCKET: notify.path } });
    await daemon.ready();
    await notify.waitFor((n) => n.fields.READY === '1');
    daemon.kill('SIGINT');
    expect(await daemon.exited).toEqual({ code: 0, signal: null });
    await notify.waitFor((n) => n.fields.STOPPING === '1');
    expect(notify.messages.filter((n) => n.fields.WATCHDOG === '1')).toEqual([]);
  });

  it('sends no watchdog pings when WATCHDOG_PID names another process', async () => {
    daemon = Daemon.start(writeConfig(tmp.dir), {
      env: { NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: '200000', WATCHDOG_PID: '1' },
    });
    await daemon.ready();
    await notify.waitFor((n) => n.fields.READY === '1');
    // Let several ping periods (100 ms each) pass, then check.
    await new Promise((r) => setTimeout(r, 600));
    expect(notify.messages.filter((n) => n.fields.WATCHDOG === '1')).toEqual([]);
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('answers unknown paths and methods with JSON errors carrying a stable code', async () => {
    daemon = Daemon.start(writeConfig(tmp.dir), { env: { NOTIFY_SOCKET: notify.path } });
    const base = await daemon.ready();
    const before = await fetch(`${base}/nope`);
    expect(before.status).toBe(404);
    expect(((await before.json()) as { code: string }).code).toBe('NOT_FOUND');
    const post = await fetch(`${base}/healthz`, { method: 'POST' });
    expect(post.status).toBe(405);
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});

describe('a second stop signal', () => {
  it('forces exit 130 when it arrives while the graceful stop is still running', async () => {
    const tmp = tempDir();
    const daemon = Daemon.start(writeConfig(tmp.dir));
    const client = new Socket();
    try {
      const base = new URL(await daemon.ready());
      // A client that has sent half a request keeps the listener's stop
      // waiting (up to one second), as a stuck client on the plant network would.
      await new Promise<void>((resolve) => client.connect(Number(base.port), '127.0.0.1', resolve));
      client.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n');
      await new Promise((r) => setTimeout(r, 100));
      // The second signal right behind the first: the graceful stop takes at least
      // the services' stops, so it is still running, however slowly this test is scheduled
      // (waiting for 'edge-agent stopping' first left the stop a second to finish in).
      daemon.kill('SIGTERM');
      daemon.kill('SIGINT');
      expect(await daemon.exited).toEqual({ code: 130, signal: null });
      expect(daemon.logs.map((l) => l.msg)).toContain('signal received: stopping');
      expect(daemon.logs.map((l) => l.msg)).toContain('second signal: forcing exit without a clean stop');
      expect(daemon.logs.map((l) => l.msg)).not.toContain('edge-agent stopped');
    } finally {
      client.destroy();
      await daemon.dispose();
      tmp.cleanup();
    }
  });
});

describe('the watchdog and a wedged database', () => {
  it('withholds WATCHDOG=1 while heartbeats cannot be written, and resumes once they can', async () => {
    const tmp = tempDir();
    const notify = await NotifyCapture.start(tmp.dir);
    const file = writeConfig(
      tmp.dir,
      ['agent:', `  dataDir: ${tmp.dir}/data`, '  heartbeatIntervalMs: 200', 'store:', '  busyTimeoutMs: 50', 'http:', '  port: 0', ''].join('\n'),
    );
    const daemon = Daemon.start(file, { env: { NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: '200000' } });
    let blocker: BetterSqlite3.Database | undefined;
    try {
      await daemon.ready();
      await notify.waitFor((n) => n.fields.WATCHDOG === '1');
      // Another process holds the write lock: every heartbeat fails with SQLITE_BUSY.
      blocker = new BetterSqlite3(`${tmp.dir}/data/edge-agent.db`);
      blocker.exec('BEGIN EXCLUSIVE');
      await daemon.waitForLog((l) => l.msg === 'heartbeat could not be written');
      await daemon.waitForLog((l) => l.msg === 'watchdog ping withheld: agent not healthy');
      const withheldAt = notify.messages.length;
      await new Promise((r) => setTimeout(r, 400));
      expect(notify.messages.slice(withheldAt).filter((n) => n.fields.WATCHDOG === '1')).toEqual([]);
      blocker.exec('ROLLBACK');
      await daemon.waitForLog((l) => l.msg === 'heartbeat written again');
      await notify.waitFor((n) => n.fields.WATCHDOG === '1', 5_000, notify.messages.length);
      daemon.kill('SIGTERM');
      expect((await daemon.exited).code).toBe(0);
    } finally {
      blocker?.close();
      await daemon.dispose();
      await notify.close();
      tmp.cleanup();
    }
  });
});
