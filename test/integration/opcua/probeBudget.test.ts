import { spawn, type ChildProcess } from 'node:child_process';
import { Socket } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { defaultConfig } from '../../../agent/config/schema.js';
import { OpcuaDiscovery } from '../../../agent/discovery/opcua/opcuaDiscovery.js';
import { EventBus } from '../../../agent/events.js';
import { Store } from '../../../agent/store/database.js';
import { DeviceRepository } from '../../../agent/store/deviceRepository.js';
import { DiscoveryRunRepository } from '../../../agent/store/discoveryRunRepository.js';
import { OpcuaProbe } from '../../../agent/transport/opcuaProbe.js';
import { tempDir } from '../../helpers/daemon.js';
import { requireLoopback, startHangingServer, type RawTcpServer } from '../../helpers/opcuaServer.js';

const TIMEOUT_MS = 4_000;
const log = pino({ level: 'silent' });

/** Waits in real time (setImmediate and performance.now are not faked here) until `check` holds. */
async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/**
 * Lets what is already due run: a few turns of the event loop, microseconds
 * of real time. A probe whose deadline was the fake clock's ends within
 * them; one still waiting on a real timer (seconds away) does not.
 */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

/**
 * A listener that never accepts, with an accept queue of one (listen
 * backlog 0), filled at once: the next connection's SYN is dropped and its
 * connect hangs, until `release()` accepts the filler and frees the slot
 * (the kernel's next SYN retransmission, a second or two later, gets in).
 * In Python: Node accepts every connection as it comes.
 */
async function slowAccepting(host: string): Promise<{ port: number; release(): void; stop(): Promise<void> }> {
  const child: ChildProcess = spawn(
    'python3',
    [
      '-c',
      `import socket, sys\ns = socket.socket()\ns.bind((${JSON.stringify(requireLoopback(host))}, 0))\ns.listen(0)\n` +
        'print(s.getsockname()[1], flush=True)\nkept = [s.accept()[0] for line in sys.stdin]\n',
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
  });
  const filler = new Socket();
  filler.on('error', () => undefined);
  await new Promise<void>((resolve) => filler.connect(port, host, resolve));
  return {
    port,
    release: () => void child.stdin!.write('\n'),
    stop: async () => {
      filler.destroy();
      child.kill();
      if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
    },
  };
}

/**
 * What one address costs a discovery run: opcua.timeoutMs, once, however
 * its time is spent (docs/configuration.md). Counted in fake time: every
 * phase takes its timeout from one deadline on the global clock, so the
 * probe ends exactly when the budget is spent, whatever the machine's load.
 */
describe('the time an OPC UA address may take (opcua.timeoutMs), in fake time', () => {
  let tmp: ReturnType<typeof tempDir>;
  let probe: OpcuaProbe;
  let hanging: RawTcpServer;
  beforeAll(async () => {
    tmp = tempDir();
    probe = new OpcuaProbe({ log, pkiDir: join(tmp.dir, 'pki'), applicationUri: 'urn:edge-agent:budget-test' });
    await probe.init();
    hanging = await startHangingServer('127.0.0.2');
  });
  afterEach(() => void vi.useRealTimers());
  afterAll(async () => {
    await hanging?.stop();
    await probe?.dispose();
    tmp?.cleanup();
  });

  it('gives a configured endpoint that accepts and never answers timeoutMs once', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const before = hanging.connections;
    let outcome: { error?: Error & { code?: string } } | undefined;
    void probe.probe(hanging.endpointUrl, TIMEOUT_MS).then(
      () => (outcome = {}),
      (error: Error) => (outcome = { error }),
    );
    await until('the connection', () => hanging.connections > before);
    await vi.advanceTimersByTimeAsync(TIMEOUT_MS - 1);
    expect(outcome).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    expect(outcome?.error?.code).toBe('TIMEOUT');
    await until('the hung connection closed', () => hanging.open === 0);
  });

  it('gives a scanned address whose TCP connect is slow and whose server then hangs timeoutMs in all', async () => {
    const slow = await slowAccepting('127.0.0.3');
    const { store } = Store.open({ path: join(tmp.dir, 'budget.db'), busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' }, log);
    try {
      const base = defaultConfig().opcua;
      const config = {
        ...base,
        runOnStart: false,
        timeoutMs: TIMEOUT_MS,
        scan: { ...base.scan, ranges: ['127.0.0.3/32'], ports: [slow.port], concurrency: 1 },
      };
      const runs = new DiscoveryRunRepository(store);
      const bus = new EventBus(log);
      const phases: string[] = [];
      bus.on('discovery.progress', 'test', (p) => phases.push(p.phase));
      const discovery = new OpcuaDiscovery({ log, config: () => config, probe, runs, devices: new DeviceRepository(store), store, bus });
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
      const run = runs.request('opcua', 'technician', 'tech-t');
      let ended = false;
      void discovery.run(run).finally(() => (ended = true));
      // The TCP connect is under way (its SYN dropped): a quarter of the budget passes before the listener takes it.
      await until('the scan', () => phases.includes('scanning'));
      const connecting = TIMEOUT_MS / 4;
      await vi.advanceTimersByTimeAsync(connecting);
      slow.release();
      await until('the connect to get through', () => phases.includes('probing'), 20_000);
      // The probe (its hello's connect hangs now, the slot taken) gets what the connect left, no more.
      await vi.advanceTimersByTimeAsync(TIMEOUT_MS - connecting - 1);
      expect(ended).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      await settle();
      expect(ended).toBe(true);
      expect(runs.targets(run.id)).toMatchObject([{ target: `opc.tcp://127.0.0.3:${slow.port}`, source: 'scan', status: 'nothing' }]);
      expect(runs.get(run.id)!.status).toBe('done');
    } finally {
      vi.useRealTimers();
      store.close();
      await slow.stop();
    }
  }, 180_000);
});
