import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { OpcuaDiscovery } from '../../agent/discovery/opcua/opcuaDiscovery.js';
import { defaultConfig, type Config } from '../../agent/config/schema.js';
import { EventBus } from '../../agent/events.js';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import { DiscoveryRunRepository } from '../../agent/store/discoveryRunRepository.js';
import { loadOpcua } from '../../agent/transport/opcuaLoader.js';
import { OpcuaProbe } from '../../agent/transport/opcuaProbe.js';
import { freePort } from '../lib/local.js';
import type { BenchResult } from './result.js';

const HOSTS = ['127.0.1.10', '127.0.1.20'];

/**
 * OPC UA discovery speed on loopback: a scan of a /24 (254 addresses) in
 * which two real node-opcua servers listen, next to probing the same two
 * servers as configured endpoints, in the same run: the difference is what
 * the scan itself costs.
 */
export async function opcuaBench(): Promise<BenchResult[]> {
  const log = pino({ level: 'silent' });
  await loadOpcua(log); // routes node-opcua's console output before any of it loads
  // node-opcua-server is a development dependency: the benchmark runs from a checkout.
  const { OPCUAServer } = await import('node-opcua-server');
  const { OPCUACertificateManager } = await import('node-opcua-certificate-manager');
  const { nodesets } = await import('node-opcua-nodesets');
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-opcua-'));
  const servers: { shutdown(ms: number): Promise<void> }[] = [];
  const { store } = Store.open({ path: join(dir, 'bench.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' }, log);
  const probe = new OpcuaProbe({ log, pkiDir: join(dir, 'client-pki'), applicationUri: 'urn:edge-agent:bench' });
  try {
    const port = await freePort();
    for (const [i, host] of HOSTS.entries()) {
      const manager = (name: string) => new OPCUACertificateManager({ rootFolder: join(dir, `${name}-${i}`), automaticallyAcceptUnknownCertificate: true });
      const server = new OPCUAServer({
        host,
        hostname: host,
        port,
        serverCertificateManager: manager('pki'),
        userCertificateManager: manager('user'),
        nodeset_filename: [nodesets.standard],
        serverInfo: { applicationUri: `urn:bench:server:${i}` },
      });
      await server.initialize();
      await server.start();
      servers.push(server);
    }
    await probe.init();
    const runs = new DiscoveryRunRepository(store);
    const measure = async (opcua: Config['opcua']): Promise<{ ms: number; found: number }> => {
      const discovery = new OpcuaDiscovery({ log, config: () => opcua, probe, runs, devices: new DeviceRepository(store), store, bus: new EventBus(log) });
      const run = runs.request('opcua', 'technician', 'bench');
      const started = performance.now();
      await discovery.run(run);
      return { ms: performance.now() - started, found: runs.get(run.id)!.found };
    };
    const base = defaultConfig().opcua;
    const endpoints = HOSTS.map((h) => `opc.tcp://${h}:${port}`);
    await measure({ ...base, endpoints }); // warm-up: first connections, the client certificate
    const median = (v: number[]) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
    const alone: number[] = [];
    const scan: number[] = [];
    for (let round = 0; round < 5; round++) {
      alone.push((await measure({ ...base, endpoints })).ms);
      const scanned = await measure({ ...base, scan: { ...base.scan, ranges: ['127.0.1.0/24'], ports: [port] } });
      if (scanned.found !== HOSTS.length) throw new Error(`the /24 scan found ${scanned.found} servers, not ${HOSTS.length}`);
      scan.push(scanned.ms);
    }
    return [
      {
        name: 'opcua: discovery scan of a /24 on loopback (2 servers)',
        value: median(scan),
        unit: 'ms',
        limit: `probing the same ${HOSTS.length} servers as configured endpoints: ${Math.round(median(alone))} ms (medians of 5, same run)`,
      },
    ];
  } finally {
    await probe.dispose();
    for (const s of servers) await s.shutdown(0);
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
