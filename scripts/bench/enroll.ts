import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { findMosquitto } from '../lib/local.js';
import { simulateDevices, type SimulationOptions, type SimulationResult } from '../simulate/mqttDevices.js';
import { backlogRow } from './enrollBacklog.js';
import { startStack, type EnrollStack } from './enrollStack.js';
import { CpuMeter, loadText } from './procCpu.js';
import type { BenchResult } from './result.js';

const DEVICES = 2_000;
/** Devices in flight at once: enough that the agent, not the round trips, sets the pace. */
const CONCURRENCY = 200;
const CORES = availableParallelism();
/** Simulator threads: one per core, so the simulator can take whatever the agent and the broker leave. */
const WORKERS = Math.max(2, CORES);
/** The TLS resumption comparison: devices, each reconnecting this many times after its hello. */
const RECONNECT = { devices: 200, times: 5 };
const fmt = (v: number) => Math.round(v).toLocaleString('en-US');
const pct = (v: number) => `${Math.round(v)}%`;
const perDevice = (seconds: number) => `${((seconds / DEVICES) * 1000).toFixed(1)} ms`;

const percentile = (values: number[], q: number): number => {
  const v = [...values].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.floor((v.length * q) / 100))] ?? 0;
};

function allIssued(result: SimulationResult, what: string): void {
  if (result.counts.issued === result.devices.length) return;
  const first = result.devices.find((d) => d.status !== 'issued');
  throw new Error(
    `${what}: only ${result.counts.issued} of ${result.devices.length} devices enrolled; first problem: ${first?.id} ${first?.status} ${first?.reason ?? ''}`,
  );
}

/** Which of ours took the most CPU, and how busy the machine was (other work on it included). */
function whoLimits(used: Record<string, { percent: number }>, machinePercent: number): string {
  const ours = Object.values(used).reduce((sum, u) => sum + u.percent, 0);
  const [top] = Object.entries(used).sort((a, b) => b[1].percent - a[1].percent);
  return `most: ${top?.[0]}; these together ${pct(ours)} of ${CORES * 100}%, the machine's cores ${pct(machinePercent)} busy`;
}

/** The enrollment row of one broker, then its TLS resumption row. */
async function measure(broker: 'Mosquitto' | 'embedded broker', mosquitto: string | undefined, caRate: number | undefined): Promise<BenchResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-enroll-'));
  let stack: EnrollStack | undefined;
  try {
    stack = await startStack(dir, mosquitto, DEVICES + 100 + 2 * RECONNECT.devices);
    const version = mosquitto ? 5 : 4; // the embedded broker (aedes) speaks MQTT 3.1.1 only
    const common: SimulationOptions = {
      provisioningUrl: stack.provisioningUrl,
      caFile: stack.caFile,
      token: stack.token,
      protocolVersion: version,
      concurrency: CONCURRENCY,
      timeoutMs: 60_000,
      workers: WORKERS,
      pregenerate: true,
    };
    allIssued(await simulateDevices({ ...common, count: 100, idPrefix: 'warm-' }), 'warm-up');
    const pids: Record<string, number> = { simulator: process.pid, ...(stack.broker ? { Mosquitto: stack.broker.pid! } : {}), agent: stack.agent.pid! };
    const meter = new CpuMeter(pids);
    const result = await simulateDevices({ ...common, count: DEVICES, idPrefix: 'bench-', onStart: () => meter.start() });
    const { used, machinePercent } = meter.stop();
    const load = loadText(CORES);
    allIssued(result, broker);
    const enrolled = result.devices.map((d) => d.enrolledMs ?? 0);
    const agentRate = DEVICES / Math.max(0.01, used.agent!.seconds);
    const cpu = [
      `simulator ${pct(used.simulator!.percent)} (${result.workers} threads)`,
      ...(used.Mosquitto ? [`Mosquitto ${pct(used.Mosquitto.percent)}`] : []),
      `agent ${pct(used.agent!.percent)}${mosquitto ? '' : ' (broker included)'}`,
    ];
    const rows: BenchResult[] = [
      {
        name: `enroll: ${fmt(DEVICES)} devices through ${broker} (MQTT ${version === 5 ? '5' : '3.1.1'}, ${CONCURRENCY} at once)`,
        value: result.enrollmentsPerSecond,
        unit: 'enrollments/s',
        limit: [
          `enrollment p50 ${percentile(enrolled, 50)} ms, p95 ${percentile(enrolled, 95)} ms`,
          `mTLS hello p50 ${percentile(
            result.devices.map((d) => d.connectedMs ?? 0),
            50,
          )} ms`,
          `CPU of one core: ${cpu.join(', ')}; ${whoLimits(used, machinePercent)}; ${load}`,
          `CPU per device: simulator ${perDevice(used.simulator!.seconds)}, agent ${perDevice(used.agent!.seconds)}${
            used.Mosquitto ? `, Mosquitto ${perDevice(used.Mosquitto.seconds)}` : ''
          }`,
          `agent ${fmt(agentRate)} enrollments per CPU-second = ${
            caRate === undefined
              ? '(run with the ca bench for the ratio)'
              : `${(agentRate / caRate).toFixed(2)} × the CA alone, ${fmt(caRate)} certificates per CPU-second in the same run (bound ≥ 0.5)`
          }`,
          `keys and CSRs made beforehand (${((result.prepareMs ?? 0) / 1000).toFixed(1)} s)`,
        ].join('; '),
      },
    ];
    rows.push(await resumption(broker, stack, common));
    return rows;
  } finally {
    await stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The same devices reconnecting to the mutual-TLS listener, with a full
 * handshake each time and then offering their own previous TLS session:
 * what resumption saves the broker side, and the devices' latency.
 */
async function resumption(broker: string, stack: EnrollStack, common: SimulationOptions): Promise<BenchResult> {
  const side: Record<string, number> = stack.broker ? { Mosquitto: stack.broker.pid! } : { 'agent (embedded broker)': stack.agent.pid! };
  const [sideName] = Object.keys(side);
  const runs: { result: SimulationResult; seconds: number }[] = [];
  for (const resumeTls of [false, true]) {
    const meter = new CpuMeter(side);
    const result = await simulateDevices({
      ...common,
      count: RECONNECT.devices,
      idPrefix: resumeTls ? 'resume-' : 'full-',
      reconnects: RECONNECT.times,
      resumeTls,
      onStart: () => meter.start(),
    });
    allIssued(result, `${broker} reconnections`);
    runs.push({ result, seconds: meter.stop().used[sideName!]!.seconds });
  }
  const [full, resumed] = runs as [(typeof runs)[0], (typeof runs)[0]];
  const p50 = (r: SimulationResult) =>
    percentile(
      r.devices.flatMap((d) => d.reconnectedMs ?? []),
      50,
    );
  const reconnections = RECONNECT.devices * RECONNECT.times;
  const count = resumed.result.devices.reduce((n, d) => n + (d.resumed ?? 0), 0);
  const saved = ((full.seconds - resumed.seconds) / reconnections) * 1000;
  return {
    name: `enroll: mTLS reconnect resuming the device's own TLS session (${broker})`,
    value: p50(resumed.result),
    unit: 'ms p50',
    limit: [
      `full handshake p50 ${p50(full.result)} ms in the same run`,
      `resumed ${count} of ${reconnections}`,
      `${sideName} CPU for ${RECONNECT.devices} enrollments + ${reconnections} reconnections: ` +
        `${full.seconds.toFixed(2)} s full, ${resumed.seconds.toFixed(2)} s resumed (${saved.toFixed(2)} ms saved per reconnection)`,
    ].join('; '),
  };
}

/**
 * End-to-end MQTT enrollment, through a real Mosquitto and through the
 * agent's embedded broker: 2,000 simulated devices (keys and CSRs made
 * beforehand, spread over worker threads so that the simulator is not the
 * limit) publish their request on the provisioning listener, receive the
 * certificate the daemon issued, and say hello on the mutual-TLS listener.
 * Each row shows the CPU of the simulator, Mosquitto and the agent, and the
 * agent's enrollments per CPU-second against the CA's own issuance rate
 * measured by the `ca` benchmark in the same `npm run bench`.
 */
export async function enrollBench(caRate: () => number | undefined): Promise<BenchResult[]> {
  const mosquitto = findMosquitto();
  const rows: BenchResult[] = mosquitto
    ? await measure('Mosquitto', mosquitto, caRate())
    : [
        {
          name: `enroll: ${fmt(DEVICES)} devices through Mosquitto`,
          value: 0,
          unit: 'enrollments/s',
          limit: 'not run: mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)',
        },
      ];
  if (mosquitto) rows.push(await backlogRow(mosquitto, caRate(), WORKERS, CORES));
  rows.push(...(await measure('embedded broker', undefined, caRate())));
  return rows;
}
