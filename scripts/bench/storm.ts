/**
 * Reconnect storm: a plant after a power cut. 2,000 provisioned devices
 * (enrolled through the real MQTT path beforehand) connect over mutual TLS
 * at the same instant, each publishing a QoS 1 hello; the figure is the time
 * until the last PUBACK, through the embedded broker and through Mosquitto,
 * one row each. The bound, measured in the same run with the same keys and
 * certificates, is the rate of bare TLS handshakes a node:tls server in its
 * own process accepts (stormTlsServer.ts). While the storm runs, the agent's
 * API latency, an enrollment, and its memory and CPU are watched.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { findMosquitto } from '../lib/local.js';
import type { BenchResult } from './result.js';
import { cpuSeconds, describeLatency, memory, resetPeak, sampleApi, sampleApiFor, type ApiSamples } from './stormProbe.js';
import { percentile, storm, type StormDevice, type StormOutcome } from './stormLoad.js';
import { startGateway, stopAll, type Gateway } from './stormSetup.js';

const DEVICES = Number(process.env.BENCH_STORM_DEVICES ?? 2_000);
/** Enrollments started while the storm runs (and as many on a quiet gateway, before it). */
const LATE_ENROLLMENTS = 3;
const QUIET_SAMPLE_MS = 3_000;
const SETTLE_MS = 3_000;
const fmt = (v: number) => Math.round(v).toLocaleString('en-US');
const mib = (v: number) => `${Math.round(v)} MiB`;
/** The two most frequent reasons attempts failed, when any did. */
const why = (o: StormOutcome) =>
  o.errors.length === 0
    ? ''
    : ` [${o.errors
        .slice(0, 2)
        .map(([k, n]) => `${n}× ${k}`)
        .join(', ')}]`;
const perDevice = (cpu: number, n: number) => ((cpu * 1000) / Math.max(1, n)).toFixed(1);
const share = (cpu: number, seconds: number) => `${Math.round((cpu / seconds) * 100)}%`;

/** The bound: bare TLS handshakes with the gateway's broker key and the devices' certificates. */
async function rawTls(gw: Gateway): Promise<StormOutcome & { serverCpu: number }> {
  const server = fork(new URL('./stormTlsServer.js', import.meta.url), [gw.files.serverKey, gw.files.serverCert, gw.files.ca], { stdio: 'inherit' });
  try {
    const [{ port }] = (await once(server, 'message')) as [{ port: number }];
    let cpu0 = 0;
    const outcome = await storm({ mode: 'tls', host: '127.0.0.1', port, ca: ca(gw), devices: gw.devices, onStart: () => (cpu0 = cpuSeconds(server.pid!)) });
    const serverCpu = cpuSeconds(server.pid!) - cpu0;
    await outcome.release();
    return { ...outcome, serverCpu };
  } finally {
    server.disconnect();
    if (server.exitCode === null) await once(server, 'exit');
  }
}

const ca = (gw: Gateway) => readFileSync(gw.files.ca, 'utf8');

async function measure(gw: Gateway, name: string): Promise<BenchResult> {
  const bound = await rawTls(gw);
  const probe = gw.devices[0]!.id;
  // Quiet: API latency and enrollments on the idle gateway.
  const quiet = await sampleApiFor(gw.base, gw.adminToken, probe, QUIET_SAMPLE_MS);
  const quietEnroll = await gw.enroll(LATE_ENROLLMENTS, `${gw.kind}-quiet-`);
  const pids = { agent: gw.agent.pid!, mosquitto: gw.mosquitto?.pid };
  resetPeak(pids.agent);
  if (pids.mosquitto) resetPeak(pids.mosquitto);
  const before = { agent: memory(pids.agent), cpu: 0, mosquittoCpu: 0 };
  const load0 = loadavg()[0]!;

  const sampling = new AbortController();
  let during: Promise<ApiSamples> | undefined;
  let late: ReturnType<Gateway['enroll']> | undefined;
  let started = 0;
  const onStart = () => {
    started = performance.now();
    before.cpu = cpuSeconds(pids.agent);
    before.mosquittoCpu = pids.mosquitto ? cpuSeconds(pids.mosquitto) : 0;
    during = sampleApi(gw.base, gw.adminToken, probe, sampling.signal);
    // Just after the devices' first attempts went out: these requests queue behind the handshakes.
    late = new Promise((r) => setTimeout(r, 200)).then(() => gw.enroll(LATE_ENROLLMENTS, `${gw.kind}-late-`));
  };
  let outcome: StormOutcome;
  try {
    outcome = await storm({ mode: 'mqtt', host: '127.0.0.1', port: gw.mtlsPort, ca: ca(gw), devices: gw.devices, onStart });
  } finally {
    sampling.abort();
  }
  const wall = (performance.now() - started) / 1000;
  const cpu = {
    agent: cpuSeconds(pids.agent) - before.cpu,
    mosquitto: pids.mosquitto ? cpuSeconds(pids.mosquitto) - before.mosquittoCpu : 0,
  };
  const api = await during!;
  const lateResult = await late!;
  const held = { agent: memory(pids.agent), mosquitto: pids.mosquitto ? memory(pids.mosquitto) : undefined };
  const { dropped } = await outcome.release();
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const after = memory(pids.agent);
  // The same storm again: an agent whose memory is bounded ends it where it ended the first.
  const again = await storm({ mode: 'mqtt', host: '127.0.0.1', port: gw.mtlsPort, ca: ca(gw), devices: gw.devices });
  const heldAgain = memory(pids.agent);
  await again.release();
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const afterAgain = memory(pids.agent);

  const rate = outcome.done / Math.max(0.001, outcome.seconds);
  const rawRate = bound.done / Math.max(0.001, bound.seconds);
  const lateIssued = lateResult.devices.filter((d) => d.status === 'issued');
  const enrollMs = (r: typeof lateResult) => Math.max(0, ...r.devices.map((d) => d.enrolledMs ?? 0));
  const parts = [
    `${outcome.failed === 0 ? 'all ' : ''}${fmt(outcome.done)} of ${fmt(gw.devices.length)} connected and acknowledged in ${outcome.seconds.toFixed(1)} s` +
      ` (p50 ${(percentile(outcome.doneMs, 50) / 1000).toFixed(1)} s; ${outcome.retries} retries${why(outcome)}, ${outcome.failed} failed` +
      `${outcome.firstError ? `: ${outcome.firstError}` : ''}${dropped ? `, ${dropped} dropped while held` : ''})`,
    `vs raw TLS handshakes, same keys, bare node:tls in its own process: ${fmt(rawRate)}/s` +
      ` (${bound.seconds.toFixed(1)} s for ${fmt(bound.done)}, ${bound.retries} retries${why(bound)}) — ratio ${(rate / rawRate).toFixed(2)}`,
    `API before → during: /healthz ${describeLatency(quiet.health)} → ${describeLatency(api.health)},` +
      ` GET device ${describeLatency(quiet.device)} → ${describeLatency(api.device)}${api.errors ? ` (${api.errors} failed)` : ''}`,
    `enrollment during the storm: ${lateIssued.length}/${LATE_ENROLLMENTS} issued,` +
      ` slowest ${fmt(enrollMs(lateResult))} ms (quiet ${fmt(enrollMs(quietEnroll))} ms)`,
    `agent RSS ${mib(before.agent.rss)} before, peak ${mib(held.agent.peak)}, ${mib(held.agent.rss)} holding ${fmt(outcome.done)},` +
      ` ${mib(after.rss)} ${SETTLE_MS / 1000} s after they left; a second storm (${again.seconds.toFixed(1)} s, ${again.done} done):` +
      ` peak ${mib(heldAgain.peak)}, ${mib(afterAgain.rss)} after${held.mosquitto ? `; Mosquitto RSS peak ${mib(held.mosquitto.peak)}` : ''}`,
    `CPU of one core over ${wall.toFixed(1)} s (the agent's includes the API samples, one request at a time):` +
      ` agent ${share(cpu.agent, wall)}${pids.mosquitto ? `, Mosquitto ${share(cpu.mosquitto, wall)}` : ''},` +
      ` load generator ${share(outcome.cpuSeconds, wall)} (${outcome.threads} threads); load average ${load0.toFixed(2)}`,
    // CPU time per device does not depend on how busy the machine is, unlike the wall time.
    `CPU ms per device, retries included: ${pids.mosquitto ? `Mosquitto ${perDevice(cpu.mosquitto, outcome.done)}, ` : ''}` +
      `agent ${perDevice(cpu.agent, outcome.done)} vs bare TLS server ${perDevice(bound.serverCpu, bound.done)} per handshake`,
  ];
  return { name, value: rate, unit: 'connects/s', limit: parts.join('; ') };
}

/**
 * Mosquitto first, which enrolls the devices; then the same gateway (data
 * directory, CA, inventory, device certificates) restarts with the embedded
 * broker instead. Without Mosquitto, the embedded gateway enrolls them.
 * BENCH_STORM_ONLY=embedded|mosquitto runs one of the two.
 */
export async function stormBench(): Promise<BenchResult[]> {
  const rows: BenchResult[] = [];
  const mosquittoBin = findMosquitto();
  const only = process.env.BENCH_STORM_ONLY;
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-storm-'));
  let devices: StormDevice[] | undefined;
  try {
    for (const [kind, label] of [
      ['mosquitto', 'Mosquitto'],
      ['embedded', 'embedded broker (aedes)'],
    ] as const) {
      if (only !== undefined && only !== kind) continue;
      const name = `storm: ${fmt(DEVICES)} mTLS reconnects at once, ${label}`;
      if (kind === 'mosquitto' && !mosquittoBin) {
        rows.push({ name, value: 0, unit: 'connects/s', limit: 'not run: mosquitto is not installed (apt-get install -y mosquitto)' });
        continue;
      }
      const children: ChildProcess[] = [];
      try {
        const gw = await startGateway(kind, dir, DEVICES, mosquittoBin, children, devices);
        devices = gw.devices;
        rows.push(await measure(gw, name));
      } finally {
        await stopAll(children);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
