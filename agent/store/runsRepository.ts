import { hostname } from 'node:os';
import { AGENT_VERSION } from '../version.js';
import type { AgentRun, RunLog } from '../runs/runRecorder.js';
import type { Store } from './database.js';

interface RunRow {
  id: number;
  started_at: string;
  pid: number;
  hostname: string;
  agent_version: string;
  last_heartbeat_at: string;
  stopped_at: string | null;
  stop_reason: 'stopped' | 'unclean' | null;
}

const toRun = (r: RunRow): AgentRun => ({
  id: r.id,
  startedAt: r.started_at,
  pid: r.pid,
  hostname: r.hostname,
  agentVersion: r.agent_version,
  lastHeartbeatAt: r.last_heartbeat_at,
  stoppedAt: r.stopped_at,
  stopReason: r.stop_reason,
});

/** SQL for the `agent_runs` table: the daemon's own start/heartbeat/stop record. */
export class RunsRepository implements RunLog {
  constructor(private readonly store: Store) {}

  /**
   * Closes any run left open by a process that died without stopping (its
   * last heartbeat is when it was last known alive) and opens a new one, in
   * one durable transaction. Returns the new run and the runs it closed.
   */
  begin(now: Date): { run: AgentRun; unclean: AgentRun[] } {
    return this.store.durable(() => {
      const db = this.store.db;
      const open = (db.prepare('SELECT * FROM agent_runs WHERE stopped_at IS NULL ORDER BY id').all() as RunRow[]).map(toRun);
      const close = db.prepare("UPDATE agent_runs SET stopped_at = last_heartbeat_at, stop_reason = 'unclean' WHERE id = ?");
      for (const r of open) close.run(r.id);
      const at = now.toISOString();
      const info = db
        .prepare('INSERT INTO agent_runs (started_at, pid, hostname, agent_version, last_heartbeat_at) VALUES (?, ?, ?, ?, ?)')
        .run(at, process.pid, hostname(), AGENT_VERSION, at);
      const run = toRun(db.prepare('SELECT * FROM agent_runs WHERE id = ?').get(info.lastInsertRowid) as RunRow);
      return { run, unclean: open };
    });
  }

  /** Losing the last heartbeat to a power cut is harmless, so this is not a durable commit. */
  heartbeat(id: number, now: Date): void {
    this.store.db.prepare('UPDATE agent_runs SET last_heartbeat_at = ? WHERE id = ?').run(now.toISOString(), id);
  }

  end(id: number, now: Date): void {
    this.store.durable(() => {
      this.store.db
        .prepare("UPDATE agent_runs SET stopped_at = ?, last_heartbeat_at = ?, stop_reason = 'stopped' WHERE id = ?")
        .run(now.toISOString(), now.toISOString(), id);
    });
  }

  recent(limit: number): AgentRun[] {
    return (this.store.db.prepare('SELECT * FROM agent_runs ORDER BY id DESC LIMIT ?').all(limit) as RunRow[]).map(toRun);
  }
}
