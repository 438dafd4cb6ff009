/**
 * The processes the demo starts, each in a process group of its own (so a
 * Ctrl-C at the terminal reaches only the runner, which then stops them in
 * order) and tracked until it has exited.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Tracked {
  name: string;
  child: ChildProcess;
  pid: number;
  /** Resolves once the process has exited and its pipes are closed. */
  exited: Promise<Exit>;
  /** Set once it has exited. */
  exit?: Exit;
}

const isGone = (pid: number) => {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
};

/** Signals a whole process group; one already gone is fine. */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

export class Children {
  private readonly started: Tracked[] = [];
  private stopping = false;

  /** `onUnexpectedExit` hears of a process that exits before stopAll() asked it to. */
  constructor(private readonly onUnexpectedExit: (tracked: Tracked) => void) {}

  /** Starts a process in a group of its own and tracks it. */
  spawn(name: string, command: string, args: string[], options: Omit<SpawnOptions, 'detached'> = {}): Tracked {
    return this.track(name, spawn(command, args, { ...options, detached: true }));
  }

  /** Tracks a process started elsewhere, which must lead a process group of its own (spawned with `detached: true`). */
  track(name: string, child: ChildProcess): Tracked {
    if (child.pid === undefined) throw new Error(`${name} could not be started`);
    const tracked: Tracked = {
      name,
      child,
      pid: child.pid,
      exited: new Promise<Exit>((resolve) =>
        child.once('close', (code, signal) => {
          tracked.exit = { code, signal };
          resolve(tracked.exit);
        }),
      ),
    };
    this.started.push(tracked);
    void tracked.exited.then(() => {
      if (!this.stopping) this.onUnexpectedExit(tracked);
    });
    return tracked;
  }

  /** What runs, for the banner: name and process id, in start order. */
  list(): readonly Tracked[] {
    return this.started;
  }

  /**
   * Stops every process, last started first: SIGTERM to its group, SIGKILL
   * after `graceMs` (per process, by name, else `defaultGraceMs`), then
   * anything left of the group. Resolves with what each one exited with.
   */
  async stopAll(graceMs: Record<string, number>, defaultGraceMs = 10_000): Promise<{ tracked: Tracked; exit: Exit; forced: boolean }[]> {
    this.stopping = true;
    const results: { tracked: Tracked; exit: Exit; forced: boolean }[] = [];
    for (const tracked of [...this.started].reverse()) {
      let forced = false;
      if (!tracked.exit) {
        signalGroup(tracked.pid, 'SIGTERM');
        const grace = graceMs[tracked.name] ?? defaultGraceMs;
        const inTime = await Promise.race([tracked.exited.then(() => true), delay(grace).then(() => false)]);
        if (!inTime) {
          forced = true;
          signalGroup(tracked.pid, 'SIGKILL');
        }
      }
      const exit = await tracked.exited;
      // Whatever the process left in its group (it started none, but a library might have).
      if (!isGone(-tracked.pid)) signalGroup(tracked.pid, 'SIGKILL');
      results.push({ tracked, exit, forced });
    }
    return results;
  }

  /** At once, no questions: SIGKILL to every group (a second Ctrl-C). */
  killAll(): void {
    this.stopping = true;
    for (const tracked of this.started) signalGroup(tracked.pid, 'SIGKILL');
  }
}
