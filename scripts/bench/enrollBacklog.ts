import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simulateDevices, type SimulationOptions, type SimulationResult } from '../simulate/mqttDevices.js';
import { CaReference } from './caReference.js';
import { startStack, type EnrollStack } from './enrollStack.js';
import { CpuMeter, loadText, systemCpuSeconds } from './procCpu.js';
import type { BenchResult } from './result.js';

const BACKLOG = 2_000;
const ROUNDS = 5;
/** How long the agent may stay stopped while the requests queue up: below Mosquitto's 1.5 × keepalive (60 s). */
const QUEUE_WITHIN_MS = 75_000;
const fmt = (v: number) => Math.round(v).toLocaleString('en-US');

/**
 * The agent's cost per enrollment at full speed, through Mosquitto, on a
 * machine where the simulated devices cannot keep up with it (each costs
 * several times the agent's CPU in TLS handshakes): the agent is stopped
 * (SIGSTOP) while 2,000 devices connect and publish their requests, which
 * Mosquitto holds on the agent's session; then it is let go (SIGCONT) and
 * answers the backlog as fast as it can, as after a gateway restart in the
 * middle of a commissioning day. Its CPU from then until the last device
 * has its certificate, per enrollment, next to the CA's own rate per
 * CPU-second measured in the same run. Two backlogs warm the agent (V8
 * compiles its hot code then: about a quarter of its CPU went to the
 * compiler threads in a first backlog after start, and the next was still
 * 10–15 % dearer than later ones), as the CA's figure is measured after its
 * own warm-up; the figure is the median of the next ROUNDS backlogs.
 *
 * The ratio is taken round by round: right after each backlog, the CA alone
 * (the `ca` bench's pipeline, in this process) issues as many certificates
 * into a database holding as many as the agent's, and the row reports the
 * median of the per-round ratios. The same code's backlog rate moved
 * between 1,010 and 1,590 per CPU-second within half an hour on the 2-core
 * development machine: a ratio of two figures measured minutes apart says
 * more about the machine than about the agent; and the `ca` row writes
 * into empty databases, 11 % cheaper per certificate than one of 10,000.
 * The ratio against the `ca` row of the same run is printed too.
 */
export async function backlogRow(mosquitto: string, caRate: number | undefined, workers: number, cores: number): Promise<BenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-backlog-'));
  let stack: EnrollStack | undefined;
  let reference: CaReference | undefined;
  try {
    reference = CaReference.create();
    stack = await startStack(dir, mosquitto, (ROUNDS + 2) * BACKLOG + 200);
    const common: SimulationOptions = {
      provisioningUrl: stack.provisioningUrl,
      caFile: stack.caFile,
      token: stack.token,
      protocolVersion: 5,
      skipMtls: true,
      workers,
      pregenerate: true,
      timeoutMs: 600_000,
    };
    // A few live enrollments first (the agent is subscribed and answering), then backlogs that warm
    // its compiler: a gateway on a commissioning day has answered thousands before.
    const live = await simulateDevices({ ...common, count: 100, concurrency: 50, idPrefix: 'live-' });
    if (live.counts.issued !== 100) throw new Error(`backlog warm-up: ${live.counts.issued} of 100 devices enrolled`);
    // Two: the second was still 10–15 % dearer than later ones (its hot code compiled further meanwhile).
    const first = await backlogRound(stack, common, 'first-');
    await backlogRound(stack, common, 'second-');
    // The CA alone, warmed up as the ca bench warms it, into a database that then holds as many certificates as
    // the agent's (the live enrollments and the two warm-up backlogs) and grows with it, round by round.
    const before = live.counts.issued + 2 * BACKLOG;
    const csrs = CaReference.p256Csrs(before + ROUNDS * BACKLOG, 'ref');
    await reference.issue(csrs.slice(0, before), 'mqtt-device', 'warm', 'kept');
    // Then ROUNDS measured backlogs, each followed by the CA alone issuing as many certificates: the figures are medians.
    const rounds: (Round & { caPerCpu: number })[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const round = await backlogRound(stack, common, `round${r}-`);
      const ca = await reference.issue(csrs.slice(before + r * BACKLOG, before + (r + 1) * BACKLOG), 'mqtt-device', `ref${r}`, 'kept');
      rounds.push({ ...round, caPerCpu: BACKLOG / Math.max(0.01, ca.cpuSeconds) });
    }
    const load = loadText(cores);
    const rate = (r: Round) => BACKLOG / Math.max(0.01, r.used.agent!.seconds);
    const firstRate = rate(first);
    const median = [...rounds].sort((a, b) => rate(a) - rate(b))[Math.floor(ROUNDS / 2)]!;
    const { used, wallSeconds, kernelShare } = median;
    const perCpuSecond = rate(median);
    const range = `${fmt(Math.min(...rounds.map(rate)))}–${fmt(Math.max(...rounds.map(rate)))}`;
    const ratios = rounds.map((r) => rate(r) / r.caPerCpu).sort((a, b) => a - b);
    const caRates = rounds.map((r) => r.caPerCpu);
    return {
      name: `enroll: the agent answering ${fmt(BACKLOG)} requests queued in Mosquitto (MQTT 5)`,
      value: perCpuSecond,
      unit: 'enrollments per agent CPU-second',
      perCpuSecond,
      limit: [
        `${ratios[Math.floor(ROUNDS / 2)]!.toFixed(2)} × the CA alone measured right after each backlog, into as large a database (bound ≥ 0.5; ` +
          `median of the ${ROUNDS} rounds' ratios, ${ratios[0]!.toFixed(2)}–${ratios[ROUNDS - 1]!.toFixed(2)}; ` +
          `the CA at ${fmt(Math.min(...caRates))}–${fmt(Math.max(...caRates))} certificates per CPU-second)`,
        caRate === undefined
          ? '(run with the ca bench for the ratio to its row)'
          : `${(perCpuSecond / caRate).toFixed(2)} × the ca row's ${fmt(caRate)} per CPU-second`,
        `median of ${ROUNDS} backlogs (${range} per CPU-second)`,
        `${((used.agent!.seconds / BACKLOG) * 1000).toFixed(2)} ms of agent CPU per enrollment (${Math.round(kernelShare * 100)}% of it in the kernel)`,
        `all answered in ${wallSeconds.toFixed(1)} s (${fmt(BACKLOG / wallSeconds)}/s; agent ${Math.round(used.agent!.percent)}% of a core, ` +
          `Mosquitto ${Math.round(used.Mosquitto!.percent)}%, the devices share the other core)`,
        `after two backlogs that warm the agent (its compiler; the first at ${fmt(firstRate)} per CPU-second)`,
        load,
      ].join('; '),
    };
  } finally {
    try {
      await stack?.stop(); // stopChild lets a stopped agent go before it asks it to stop
    } finally {
      reference?.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

type Round = { used: ReturnType<CpuMeter['stop']>['used']; wallSeconds: number; kernelShare: number };

/** Stops the agent, lets BACKLOG devices queue their requests in Mosquitto, lets it go, and meters it until all are answered. */
async function backlogRound(stack: EnrollStack, common: SimulationOptions, idPrefix: string): Promise<Round> {
  const agentPid = stack.agent.pid!;
  // Never leave the agent stopped behind: an interrupted bench lets it go before it ends.
  const letGo = () => {
    try {
      process.kill(agentPid, 'SIGCONT');
    } catch {
      // gone already
    }
  };
  const interrupted = (signal: NodeJS.Signals) => {
    letGo();
    process.kill(process.pid, signal);
  };
  process.once('exit', letGo);
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    process.kill(agentPid, 'SIGSTOP');
    let requested = 0;
    let queued!: () => void;
    const allQueued = new Promise<void>((resolve) => (queued = resolve));
    const simulation = simulateDevices({
      ...common,
      count: BACKLOG,
      concurrency: BACKLOG,
      idPrefix,
      onRequested: () => {
        if (++requested === BACKLOG) queued();
      },
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        allQueued,
        simulation.then((r) => {
          throw new Error(`the devices ended before every request was queued (${requested} of ${BACKLOG}): ${JSON.stringify(r.counts)}`);
        }),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`only ${requested} of ${BACKLOG} requests queued in ${QUEUE_WITHIN_MS / 1000} s`)), QUEUE_WITHIN_MS);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    const meter = new CpuMeter({ agent: agentPid, Mosquitto: stack.broker!.pid! }).start();
    const kernel = systemCpuSeconds(agentPid);
    letGo();
    const result: SimulationResult = await simulation;
    const { used, wallSeconds } = meter.stop();
    const kernelShare = (systemCpuSeconds(agentPid) - kernel) / Math.max(0.01, used.agent!.seconds);
    if (result.counts.issued !== BACKLOG) {
      const firstProblem = result.devices.find((d) => d.status !== 'issued');
      throw new Error(
        `backlog: ${result.counts.issued} of ${BACKLOG} enrolled; first problem: ${firstProblem?.id} ${firstProblem?.status} ${firstProblem?.reason ?? ''}`,
      );
    }
    return { used, wallSeconds, kernelShare };
  } finally {
    letGo();
    process.off('exit', letGo);
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }
}
