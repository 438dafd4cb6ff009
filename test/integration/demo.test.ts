import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO } from '../helpers/daemon.js';
import { pollUntil, Waiters } from '../helpers/waiters.js';

const RUN = join(REPO, 'dist/scripts/demo/run.js');

interface Device {
  id: string;
  protocol: 'mqtt' | 'opcua';
  state: string;
}

/** A process's start time (field 22 of /proc/PID/stat), which tells it apart from a later process given the same id; undefined once it is gone. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Every process below `pid` now, with its start time. */
function descendants(pid: number): { pid: number; start: string }[] {
  const parents = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parents.set(ppid, [...(parents.get(ppid) ?? []), Number(entry)]);
    } catch {
      // Gone while listed.
    }
  }
  const found: { pid: number; start: string }[] = [];
  const walk = (p: number) => {
    for (const c of parents.get(p) ?? []) {
      const start = startTime(c);
      if (start !== undefined) found.push({ pid: c, start });
      walk(c);
    }
  };
  walk(pid);
  return found;
}

/** Processes whose command line names `text` (the demo's directory). */
function mentioning(text: string): string[] {
  const hits: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmdline.includes(text)) hits.push(`${entry}: ${cmdline}`);
    } catch {
      // Gone while listed.
    }
  }
  return hits;
}

describe('npm run demo', () => {
  let demo: ChildProcess | undefined;
  let pids: number[] = [];
  let dir: string | undefined;

  afterAll(() => {
    // Only after a failure: what the demo would have stopped itself.
    for (const pid of pids) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    if (demo && demo.exitCode === null && demo.signalCode === null) demo.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs the plant on loopback: sensors provisioned (one after approval), an OPC UA push, the inventory synced; SIGINT stops it all', async () => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EDGE_AGENT_')));
    const child = spawn(process.execPath, [RUN], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    demo = child;
    let stdout = '';
    let stderr = '';
    let closed = false;
    const waiters = new Waiters();
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      waiters.wake();
    });
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('close', (code, signal) => {
        closed = true;
        waiters.wake();
        resolve({ code, signal });
      }),
    );
    const printed = (pattern: RegExp, what: string, timeoutMs = 90_000) =>
      waiters.until(() => pattern.exec(stdout) ?? undefined, {
        timeoutMs,
        timeoutMessage: () => `the demo printed no ${what}; stdout:\n${stdout}\nstderr:\n${stderr}`,
        gone: () => (closed ? `the demo exited before printing ${what}; stdout:\n${stdout}\nstderr:\n${stderr}` : undefined),
      });

    dir = (await printed(/^ {2}directory: (\S+)/m, 'directory'))[1]!;
    const url = (await printed(/^ {2}Console: +(http:\/\/127\.0\.0\.1:\d+\/)$/m, 'console URL'))[1]!;
    const token = (await printed(/^ {2}Token: +(\S+)$/m, 'token'))[1]!;
    const processes = (await printed(/^ {2}Processes: (.+)$/m, 'process list'))[1]!;
    pids = [...processes.matchAll(/ (\d+)(?:,|$)/g)].map((m) => Number(m[1]));
    expect(pids).toHaveLength(3);
    expect(token).toBe(readFileSync(join(dir, 'agent', 'admin.token'), 'utf8').trim());

    const api = async <T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> => {
      const res = await fetch(new URL(path, url), {
        method: init.method ?? 'GET',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
      });
      if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
      return (await res.json()) as T;
    };
    const devices = async () => (await api<{ items: Device[] }>('/api/v1/devices?limit=1000')).items;

    // A sensor with an enrollment token is provisioned by policy.
    await pollUntil(async () => (await devices()).find((d) => d.protocol === 'mqtt' && d.state === 'provisioned'), {
      timeoutMs: 60_000,
      intervalMs: 250,
      message: () => `no MQTT device was provisioned; stdout:\n${stdout}`,
    });
    // A sensor without one waits; approved, it gets its certificate (it keeps waiting on its provisioning connection).
    const waiting = await pollUntil(async () => (await devices()).find((d) => d.protocol === 'mqtt' && d.state === 'pending'), {
      timeoutMs: 60_000,
      intervalMs: 250,
      message: () => `no MQTT device waits for approval; stdout:\n${stdout}`,
    });
    await api(`/api/v1/devices/${encodeURIComponent(waiting.id)}/approve`, { method: 'POST', body: { reason: 'demo test', wait: 10 } });
    await pollUntil(async () => (await devices()).find((d) => d.id === waiting.id && d.state === 'provisioned'), {
      timeoutMs: 60_000,
      intervalMs: 250,
      message: () => `${waiting.id} was not provisioned after its approval`,
    });
    // The press is approved by policy: discovered, then its certificate pushed (OPC UA Part 12).
    const press = await pollUntil(async () => (await devices()).find((d) => d.protocol === 'opcua' && d.state === 'provisioned'), {
      timeoutMs: 90_000,
      intervalMs: 500,
      message: () => `no OPC UA server got a certificate pushed; stdout:\n${stdout}`,
    });
    const detail = await api<{ push?: { status: string } }>(`/api/v1/devices/${encodeURIComponent(press.id)}`);
    expect(detail.push?.status).toBe('done');
    // The mixer waits for a technician.
    await pollUntil(async () => (await devices()).find((d) => d.protocol === 'opcua' && d.state === 'discovered'), {
      timeoutMs: 30_000,
      intervalMs: 250,
      message: () => `no OPC UA server waits for a technician; stdout:\n${stdout}`,
    });
    // And the inventory reaches the CMMS receiver.
    await pollUntil(
      async () => {
        const s = await api<{ backlog: number; lastSuccess?: string }>('/api/v1/sync/status');
        return s.lastSuccess !== undefined && s.backlog === 0 ? s : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250, message: () => `the sync did not catch up; stdout:\n${stdout}` },
    );

    const started = descendants(child.pid!);
    for (const pid of pids) expect(started.map((p) => p.pid)).toContain(pid);
    child.kill('SIGINT');
    const exit = await exited;
    expect(exit, `stdout:\n${stdout}\nstderr:\n${stderr}`).toEqual({ code: 0, signal: null });
    expect(stdout).toMatch(/stopped 3 process\(es\), all cleanly/);
    // Nothing it started is left: no process it had below it (the same process, by start time), none naming its directory.
    expect(started.filter((p) => startTime(p.pid) === p.start)).toEqual([]);
    expect(mentioning(dir)).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    // All stopped by the demo itself: nothing for afterAll to kill (the ids may be another process's by then).
    pids = [];
  });
});
