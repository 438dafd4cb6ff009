import type { Config } from '../config/schema.js';
import type { Service } from '../lifecycle/service.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

export interface AgentRun {
  id: number;
  startedAt: string;
  pid: number;
  hostname: string;
  agentVersion: string;
  lastHeartbeatAt: string;
  stoppedAt: string | null;
  stopReason: 'stopped' | 'unclean' | null;
}

/** The storage the recorder needs; agent/store/runsRepository.ts implements it on SQLite. */
export interface RunLog {
  /** Durably closes runs left open (as unclean) and opens a new one. */
  begin(now: Date): { run: AgentRun; unclean: AgentRun[] };
  heartbeat(id: number, now: Date): void;
  /** Durably records the clean stop. */
  end(id: number, now: Date): void;
}

/** After a failed heartbeat, the next try comes this soon rather than a whole interval later. */
const RETRY_MS = 1_000;

/**
 * Records each run of the daemon: a durable row at start, a heartbeat while
 * it runs, the clean stop at the end. At start it reports the runs that
 * never stopped (power cut, crash, kill -9) with the last time they were
 * known alive, which is what a technician asks after an outage.
 */
export class RunRecorder implements Service {
  readonly name = 'runs';
  private runs: RunLog | undefined;
  private run: AgentRun | undefined;
  private timer: NodeJS.Timeout | undefined;
  private intervalMs: number;
  private lastSuccess = Date.now();
  private failing = false;

  constructor(private readonly deps: { log: Logger; runLog: RunLog; metrics: Metrics; heartbeatIntervalMs: number }) {
    this.intervalMs = deps.heartbeatIntervalMs;
  }

  async start(): Promise<void> {
    this.runs = this.deps.runLog;
    const { run, unclean } = this.runs.begin(new Date());
    this.run = run;
    this.lastSuccess = Date.now();
    for (const r of unclean) {
      this.deps.metrics.uncleanShutdowns.inc();
      this.deps.log.warn(
        { runId: r.id, startedAt: r.startedAt, lastHeartbeatAt: r.lastHeartbeatAt, previousPid: r.pid },
        'previous run did not stop cleanly (power cut, crash or kill -9)',
      );
    }
    this.deps.log.info({ runId: run.id }, 'run recorded');
    this.deps.metrics.heartbeatTimestamp.set(Date.parse(run.lastHeartbeatAt) / 1000);
    this.schedule(this.intervalMs);
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.beat(), delayMs);
  }

  private beat(): void {
    if (!this.runs || !this.run) return;
    const now = new Date();
    try {
      this.runs.heartbeat(this.run.id, now);
      this.lastSuccess = now.getTime();
      this.deps.metrics.heartbeatTimestamp.set(now.getTime() / 1000);
      if (this.failing) this.deps.log.info({ runId: this.run.id }, 'heartbeat written again');
      this.failing = false;
      this.deps.log.debug({ runId: this.run.id }, 'heartbeat');
      this.schedule(this.intervalMs);
    } catch (err) {
      this.failing = true;
      this.deps.log.error({ err, runId: this.run.id }, 'heartbeat could not be written');
      this.schedule(Math.min(RETRY_MS, this.intervalMs));
    }
  }

  /**
   * False once no heartbeat has been written for three intervals: the
   * database is wedged, and the watchdog stops pinging so that systemd
   * restarts the agent. One failed write (a lock held a little too long)
   * is retried within a second and does not count.
   */
  healthy(): boolean {
    return Date.now() - this.lastSuccess < 3 * this.intervalMs + RETRY_MS;
  }

  reload(config: Config): void {
    if (config.agent.heartbeatIntervalMs === this.intervalMs) return;
    this.intervalMs = config.agent.heartbeatIntervalMs;
    this.schedule(this.intervalMs);
    this.deps.log.info({ heartbeatIntervalMs: this.intervalMs }, 'heartbeat interval changed');
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.runs && this.run) this.runs.end(this.run.id, new Date());
    this.run = undefined;
  }
}
