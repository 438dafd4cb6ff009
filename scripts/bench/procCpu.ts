/**
 * CPU time and memory of a process from Linux /proc, for benchmarks that
 * show who limits a figure: the process under test, a broker, the load
 * generator (all its threads: /proc/PID/stat sums them).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';

let ticks: number | undefined;

/** Clock ticks per second of /proc/PID/stat (getconf CLK_TCK; 100 on every Linux we run on). */
function clockTicks(): number {
  if (ticks === undefined) {
    try {
      ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

/** User + system CPU time of a process (every thread) so far, in seconds. `pid` defaults to this process. */
export function cpuSeconds(pid: number = process.pid): number {
  // The command name in parentheses may hold spaces: the fields start after its ')'.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .replace(/^.*\) /s, '')
    .split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clockTicks();
}

/** The kernel's share of cpuSeconds (writes, fsync, sockets), in seconds. */
export function systemCpuSeconds(pid: number = process.pid): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .replace(/^.*\) /s, '')
    .split(' ');
  return Number(fields[12]) / clockTicks();
}

/** Resident set size of a process now, in bytes (VmRSS of /proc/PID/status). */
export function rssBytes(pid: number = process.pid): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return line === undefined ? 0 : Number(line.replace(/\D+/g, '')) * 1024;
}

/** Peak resident set size of a process so far, in bytes (VmHWM of /proc/PID/status). */
export function peakRssBytes(pid: number = process.pid): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmHWM:'));
  return line === undefined ? 0 : Number(line.replace(/\D+/g, '')) * 1024;
}

/** CPU time of the whole machine so far, in seconds summed over its cores: busy (everything but idle and iowait) and total. */
export function machineSeconds(): { busy: number; total: number } {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
  // user nice system idle iowait irq softirq steal (guest time is inside user already)
  const v = fields.slice(0, 8).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: (total - v[3]! - v[4]!) / clockTicks(), total: total / clockTicks() };
}

/** CPU used by some processes between start() and stop(), as seconds and as % of one core over the wall time. */
export class CpuMeter {
  private readonly before = new Map<string, number>();
  private startedAt = 0;
  private machine = { busy: 0, total: 0 };

  /** `pids`: a label for each process measured. */
  constructor(private readonly pids: Record<string, number>) {}

  start(): this {
    for (const [name, pid] of Object.entries(this.pids)) this.before.set(name, cpuSeconds(pid));
    this.machine = machineSeconds();
    this.startedAt = performance.now();
    return this;
  }

  /**
   * Per label: CPU-seconds used and that as a percentage of one core over
   * the wall time since start(); `machinePercent`: how busy all the cores
   * were meanwhile (100 = every core, whoever used them).
   */
  stop(): { wallSeconds: number; machinePercent: number; used: Record<string, { seconds: number; percent: number }> } {
    const wallSeconds = (performance.now() - this.startedAt) / 1000;
    const now = machineSeconds();
    const machinePercent = now.total > this.machine.total ? ((now.busy - this.machine.busy) / (now.total - this.machine.total)) * 100 : 0;
    const used: Record<string, { seconds: number; percent: number }> = {};
    for (const [name, pid] of Object.entries(this.pids)) {
      const seconds = cpuSeconds(pid) - (this.before.get(name) ?? 0);
      used[name] = { seconds, percent: wallSeconds > 0 ? (seconds / wallSeconds) * 100 : 0 };
    }
    return { wallSeconds, machinePercent, used };
  }
}

/** The 1-minute load average and the number of cores, as a benchmark prints them ("load 1.9 on 2 cores"). */
export function loadText(cores: number): string {
  return `load ${loadavg()[0]!.toFixed(1)} on ${cores} cores`;
}
