import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Service } from './service.js';

/** Another agent holds the data directory (its edge-agent.pid names a live one). */
export class InstanceLockedError extends AgentError {
  readonly code = 'INSTANCE_LOCKED' as const;
}

/** True when `pid` is a live process that looks like an edge-agent (not a reused PID). */
function isLiveAgent(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /edge-agent|agent\/main\.js/.test(cmdline);
  } catch {
    return true; // alive but not inspectable: assume it is an agent rather than risk two on one database
  }
}

/** Whether a daemon holds the data directory now (its edge-agent.pid names a live agent). */
export function daemonRunning(dataDir: string): boolean {
  try {
    return isLiveAgent(Number(readFileSync(join(dataDir, 'edge-agent.pid'), 'utf8').trim()));
  } catch {
    return false;
  }
}

/**
 * One agent per data directory. A second daemon on the same database would
 * take the first one's run for a crashed one and interleave writes, so the
 * first service takes `edge-agent.pid` in the data directory (created
 * exclusively) and the last to stop removes it. A file left by a process
 * that is gone (power cut, kill -9) is taken over.
 */
export class InstanceLock implements Service {
  readonly name = 'lock';
  private held = false;

  constructor(private readonly deps: { log: Logger; dataDir: string }) {}

  get path(): string {
    return join(this.deps.dataDir, 'edge-agent.pid');
  }

  async start(): Promise<void> {
    if (!existsSync(this.deps.dataDir)) {
      mkdirSync(this.deps.dataDir, { recursive: true, mode: 0o700 });
      this.deps.log.info({ dir: this.deps.dataDir }, 'created data directory');
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(this.path, 'wx', 0o600);
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        this.held = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = Number(readFileSync(this.path, 'utf8').trim());
      if (isLiveAgent(owner)) {
        throw new InstanceLockedError(`another edge-agent (pid ${owner}) is using ${this.deps.dataDir}; stop it first, or give this one another agent.dataDir`);
      }
      this.deps.log.warn({ stalePid: owner, path: this.path }, 'removing a lock left by an agent that is gone');
      rmSync(this.path, { force: true });
    }
    throw new InstanceLockedError(`could not take ${this.path}: another agent started at the same moment`);
  }

  async stop(): Promise<void> {
    if (!this.held) return;
    rmSync(this.path, { force: true });
    this.held = false;
  }
}
