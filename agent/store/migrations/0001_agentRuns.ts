import type { Migration } from '../migrate.js';

/** One row per start of the daemon: lets the next start see an unclean stop (power cut, kill -9). */
export const m0001AgentRuns: Migration = {
  version: 1,
  name: 'agent runs',
  sql: `
    CREATE TABLE agent_runs (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      started_at TEXT NOT NULL,
      pid INTEGER NOT NULL,
      hostname TEXT NOT NULL,
      agent_version TEXT NOT NULL,
      last_heartbeat_at TEXT NOT NULL,
      stopped_at TEXT,
      stop_reason TEXT CHECK (stop_reason IN ('stopped', 'unclean'))
    ) STRICT;
    CREATE INDEX agent_runs_open ON agent_runs (id) WHERE stopped_at IS NULL;
  `,
};
