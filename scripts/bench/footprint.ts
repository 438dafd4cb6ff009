import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { receiverTls, startReceiver } from '../cmms/receiverKit.js';
import { AGENT_MAIN as MAIN, agentProfileFlags } from './benchDaemon.js';
import { measureStart, writePlantConfig, type StartFigures } from './footprintDaemon.js';
import type { BenchResult } from './result.js';
import { seedPlant } from './seedPlant.js';

const DEVICES = 10_000;
const BUDGET = { rssMb: 150, readyMs: 2_000 };
const SETTLE_MS = 8_000;
const mb = (v: number) => `${Math.round(v)} MB`;

/** Where the time to READY went: spawn to the first service's start (Node, modules, configuration), then each service. */
function breakdown(f: StartFigures): string {
  return f.steps.map((s, i) => `${i === 0 ? 'boot' : f.steps[i - 1]!.name} ${Math.round(s.atMs - (i === 0 ? 0 : f.steps[i - 1]!.atMs))}`).join(', ');
}

/**
 * The daemon's footprint with a plant's inventory: 10,000 devices
 * (MQTT devices enrolled through the real enrollment flow, OPC UA servers
 * onboarded by push, some revoked), each with its certificate, request and
 * history, next to an empty database in the same run. Both daemons run a
 * plant's configuration: embedded broker, OPC UA on, the device report,
 * device configuration, and the sync on to the reference CMMS receiver.
 * Each database gets a first start (which drains its sync backlog and makes
 * the broker's certificate) and then the measured restart: spawn to
 * READY=1 on NOTIFY_SOCKET, RSS at READY and after the first periodic work,
 * and the peak (VmHWM).
 */
export async function footprintBench(): Promise<BenchResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-footprint-'));
  let receiver: ChildProcess | undefined;
  try {
    const tls = await receiverTls(dir);
    writeFileSync(join(dir, 'token'), 'bench-token\n');
    const cmms = await startReceiver({ db: join(dir, 'cmms.db'), tls, tokenFile: join(dir, 'token'), spawn: { stderr: 'ignore' } });
    receiver = cmms.child;
    const config = (id: string) => {
      const file = writePlantConfig(dir, { id, receiverPort: cmms.port, caFile: tls.ca, tokenFile: join(dir, 'token') });
      execFileSync(process.execPath, [MAIN, 'ca', 'init', '--config', file], { stdio: 'ignore' });
      return file;
    };
    const empty = config('gw-empty');
    const plant = config('gw-plant');
    const seed = await seedPlant({ config: plant, devices: DEVICES });
    const profile = agentProfileFlags();
    const run = async (file: string) => {
      const first = await measureStart(file, dir, { settleMs: SETTLE_MS });
      const again = await measureStart(file, dir, { settleMs: SETTLE_MS, args: profile });
      return { first, again };
    };
    const e = await run(empty);
    const p = await run(plant);
    const load = loadavg()
      .map((l) => l.toFixed(2))
      .join(' ');
    const seeded =
      `${DEVICES.toLocaleString('en-US')} devices (${seed.mqtt.length} MQTT enrolled, ${seed.opcua.length} OPC UA pushed, ` +
      `${seed.revoked.length} revoked) seeded through the real code in ${Math.round(seed.seconds)} s`;
    return [
      {
        name: `footprint: start to READY=1, ${DEVICES.toLocaleString('en-US')} devices`,
        value: p.again.readyMs,
        unit: 'ms',
        limit:
          `empty database ${Math.round(e.again.readyMs)} ms (ratio ${(p.again.readyMs / e.again.readyMs).toFixed(2)}); budget ${BUDGET.readyMs} ms; ` +
          `first start after seeding ${Math.round(p.first.readyMs)} ms; ` +
          `CPU to READY ${p.again.cpuAtReady.toFixed(2)} s (empty ${e.again.cpuAtReady.toFixed(2)} s); ` +
          `steps (ms): ${breakdown(p.again)}; empty: ${breakdown(e.again)}; load ${load}`,
      },
      {
        name: `footprint: RSS settled, ${DEVICES.toLocaleString('en-US')} devices`,
        value: p.again.settled.rss,
        unit: 'MB',
        limit:
          `empty database ${mb(e.again.settled.rss)}; budget ${BUDGET.rssMb} MB; at READY ${mb(p.again.atReady.rss)} (empty ${mb(e.again.atReady.rss)}); ` +
          `peak (VmHWM) ${mb(p.again.settled.hwm)} (empty ${mb(e.again.settled.hwm)}); anon/file ${mb(p.again.settled.anon)}/${mb(p.again.settled.file)}; ` +
          `first start after seeding: settled ${mb(p.first.settled.rss)}, peak ${mb(p.first.settled.hwm)}; ` +
          `settled after ${Math.round(p.again.settleMs / 1000)} s; ${seeded}`,
      },
    ];
  } finally {
    if (receiver && receiver.exitCode === null) {
      const gone = new Promise((r) => receiver!.once('exit', r));
      receiver.kill('SIGTERM');
      await gone;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
