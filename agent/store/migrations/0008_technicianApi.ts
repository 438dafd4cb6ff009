import type { Migration } from '../migrate.js';

/**
 * What the technician interface adds: a device's asset tag and place in
 * the plant (set by technicians, sent upstream), the targets and the
 * cancellation of a discovery run, and the audit log of every change made
 * through the local API (who, what, on what, with which outcome).
 */
export const m0008TechnicianApi: Migration = {
  version: 8,
  name: 'technician api',
  sql: `
    ALTER TABLE devices ADD COLUMN asset_tag TEXT;
    -- JSON {site, area, line, cell}; a field set here wins over the gateway's sync.location.
    ALTER TABLE devices ADD COLUMN location TEXT;

    -- JSON {protocols, targets}: what a technician asked this run to look at (NULL: the configuration).
    ALTER TABLE discovery_runs ADD COLUMN request TEXT;
    ALTER TABLE discovery_runs ADD COLUMN cancelled_by TEXT;

    -- A new target source: retained announcements an MQTT discovery run reads from the broker.
    CREATE TABLE discovery_targets_new (
      run_id INTEGER NOT NULL REFERENCES discovery_runs (id),
      target TEXT NOT NULL,
      source TEXT NOT NULL CHECK (source IN ('endpoint', 'lds', 'scan', 'mdns', 'announcement')),
      status TEXT NOT NULL CHECK (status IN ('found', 'nothing', 'error', 'skipped')),
      detail TEXT,
      device_id TEXT,
      at TEXT NOT NULL,
      PRIMARY KEY (run_id, target)
    ) STRICT;
    INSERT INTO discovery_targets_new SELECT run_id, target, source, status, detail, device_id, at FROM discovery_targets;
    DROP TABLE discovery_targets;
    ALTER TABLE discovery_targets_new RENAME TO discovery_targets;

    CREATE TABLE audit_log (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      at TEXT NOT NULL,
      actor TEXT NOT NULL,
      role TEXT NOT NULL,
      action TEXT NOT NULL,
      target TEXT NOT NULL,
      outcome TEXT NOT NULL CHECK (outcome IN ('done', 'accepted', 'refused')),
      details TEXT
    ) STRICT;
    CREATE INDEX audit_log_actor ON audit_log (actor, id);
  `,
};
