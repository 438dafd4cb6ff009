import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { RunsRepository, type AgentRun } from '../store/runsRepository.js';
import type { StoreService } from '../store/storeService.js';
import type { Service } from './service.js';

/**
 * Records each run of the daemon: a durable row at start, a heartbeat while
 * it runs, the clean stop at the end. At start it reports the runs that
 * never stopped (power cut, crash, kill -9) with the last time they were
 * known alive, which is what a technician asks after an outage.
 */
export class RunRecorder implements Service {
  readonly name = 'runs';
  private runs: RunsRepository | undefined;
  private run: AgentRun | undefined;
  private timer: NodeJS.Timeout | undefined;
  private intervalMs: number;
  private lastBeatOk = true;

  constructor(private readonly deps: { log: Logger; storage: StoreService; metrics: Metrics; heartbeatIntervalMs: number }) {
    this.intervalMs = deps.heartbeatIntervalMs;
  }

  async start(): Promise<void> {
    this.runs = new RunsRepository(this.deps.storage.store);
    const { run, unclean } = this.runs.begin(new Date());
    this.run = run;
    for (const r of unclean) {
      this.deps.metrics.uncleanShutdowns.inc();
      this.deps.log.warn(
        { runId: r.id, startedAt: r.startedAt, lastHeartbeatAt: r.lastHeartbeatAt, pid: r.pid },
        'previous run did not stop cleanly (power cut, crash or kill -9)',
      );
    }
    this.deps.log.info({ runId: run.id }, 'run recorded');
    this.deps.metrics.heartbeatTimestamp.set(Date.parse(run.lastHeartbeatAt) / 1000);
    this.schedule();
  }

  private schedule(): void {
    clearInterval(this.timer);
    this.timer = setInterval(() => this.beat(), this.intervalMs);
  }

  private beat(): void {
    if (!this.runs || !this.run) return;
    const now = new Date();
    try {
      this.runs.heartbeat(this.run.id, now);
      this.deps.metrics.heartbeatTimestamp.set(now.getTime() / 1000);
      if (!this.lastBeatOk) this.deps.log.info({ runId: this.run.id }, 'heartbeat written again');
      this.lastBeatOk = true;
      this.deps.log.debug({ runId: this.run.id }, 'heartbeat');
    } catch (err) {
      this.lastBeatOk = false;
      this.deps.log.error({ err, runId: this.run.id }, 'heartbeat could not be written');
    }
  }

  /** False when the last heartbeat could not be written: the watchdog stops pinging. */
  healthy(): boolean {
    return this.lastBeatOk;
  }

  get currentRun(): AgentRun | undefined {
    return this.run;
  }

  reload(config: Config): void {
    if (config.agent.heartbeatIntervalMs === this.intervalMs) return;
    this.intervalMs = config.agent.heartbeatIntervalMs;
    this.schedule();
    this.deps.log.info({ heartbeatIntervalMs: this.intervalMs }, 'heartbeat interval changed');
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.runs && this.run) this.runs.end(this.run.id, new Date());
    this.run = undefined;
  }
}
