import type { Migration } from '../migrate.js';

/**
 * Discovery runs: who or what started each, its targets with their outcome,
 * and its progress. A run requested by a technician while the daemon is
 * down is picked up at the next start.
 */
export const m0004DiscoveryRuns: Migration = {
  version: 4,
  name: 'discovery runs',
  sql: `
    CREATE TABLE discovery_runs (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      protocol TEXT NOT NULL CHECK (protocol IN ('opcua', 'mqtt')),
      trigger TEXT NOT NULL CHECK (trigger IN ('start', 'interval', 'technician')),
      actor TEXT NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('requested', 'running', 'done', 'failed')),
      requested_at TEXT NOT NULL,
      started_at TEXT,
      finished_at TEXT,
      targets_total INTEGER NOT NULL DEFAULT 0,
      targets_done INTEGER NOT NULL DEFAULT 0,
      found INTEGER NOT NULL DEFAULT 0,
      errors INTEGER NOT NULL DEFAULT 0,
      error TEXT
    ) STRICT;
    CREATE INDEX discovery_runs_open ON discovery_runs (id) WHERE status IN ('requested', 'running');

    CREATE TABLE discovery_targets (
      run_id INTEGER NOT NULL REFERENCES discovery_runs (id),
      target TEXT NOT NULL,
      source TEXT NOT NULL CHECK (source IN ('endpoint', 'lds', 'scan', 'mdns')),
      status TEXT NOT NULL CHECK (status IN ('found', 'nothing', 'error', 'skipped')),
      detail TEXT,
      device_id TEXT,
      at TEXT NOT NULL,
      PRIMARY KEY (run_id, target)
    ) STRICT;
  `,
};
