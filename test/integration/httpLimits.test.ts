import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, tempDir, writeConfig } from '../helpers/daemon.js';
import { Waiters } from '../helpers/waiters.js';

/** Slow clients: each connects, starts a request and then sends one more header line a second, never ending it. */
class SlowFlood {
  readonly sockets: Socket[] = [];
  closed = 0;
  private readonly waiters = new Waiters();
  private readonly timers: NodeJS.Timeout[] = [];

  async open(port: number, count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const socket = await new Promise<Socket>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port }, () => resolve(s));
        s.once('error', reject);
      });
      socket.on('error', () => undefined);
      socket.on('close', () => {
        this.closed += 1;
        this.waiters.wake();
      });
      socket.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n`);
      const timer = setInterval(() => socket.writable && socket.write(`X-Slow-${i}: 1\r\n`), 1_000);
      this.timers.push(timer);
      this.sockets.push(socket);
    }
  }

  /** Waits until the server has closed at least `n` of them. */
  closedAtLeast(n: number, timeoutMs: number): Promise<number> {
    return this.waiters.until(() => (this.closed >= n ? this.closed : undefined), {
      timeoutMs,
      timeoutMessage: () => `only ${this.closed} of ${this.sockets.length} slow connections were closed by the server`,
    });
  }

  end(): void {
    for (const t of this.timers) clearInterval(t);
    for (const s of this.sockets) s.destroy();
  }
}

describe('the local listener under a flood of slow clients (real daemon)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let base: string;
  const flood = new SlowFlood();

  beforeAll(async () => {
    tmp = tempDir();
    // A header timeout far longer than the test: what closes connections here is the cap.
    const config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-flood',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        '  maxConnections: 16',
        '  headersTimeoutMs: 120000',
        '  requestTimeoutMs: 120000',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        '  enabled: false',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    base = await daemon.ready();
  }, 60_000);
  afterAll(async () => {
    flood.end();
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('keeps at most http.maxConnections open, closing the longest-waiting slow ones, and answers a client that sends its request', async () => {
    const port = Number(new URL(base).port);
    await flood.open(port, 300);
    // Every connection past the cap closed one that had sent no whole request.
    await flood.closedAtLeast(300 - 16, 30_000);
    const health = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(20_000) });
    expect(health.status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(20_000) })).text();
    expect(Number(/^edge_agent_http_connections (\d+)$/m.exec(metrics)?.[1])).toBeLessThanOrEqual(16);
    expect(Number(/^edge_agent_http_connections_closed_at_limit_total (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(300 - 16);
    await daemon.waitForLog((l) => l.msg === 'http connection limit reached');
    // The newest slow clients still hold their connections: the flood was cut, not the listener.
    expect(flood.sockets.slice(-8).every((s) => !s.destroyed)).toBe(true);
  });
});
