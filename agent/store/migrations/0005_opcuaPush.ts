import type { Migration } from '../migrate.js';

/**
 * OPC UA push provisioning (Part 12): one job per approved server, with the
 * step it reached, its retry schedule and the certificate it issued, and a
 * log of every step begun and ended, written before the next one starts, so
 * that a restart knows where a push stopped.
 */
export const m0005OpcuaPush: Migration = {
  version: 5,
  name: 'opcua push provisioning',
  sql: `
    CREATE TABLE opcua_push_jobs (
      device_id TEXT PRIMARY KEY REFERENCES devices (id),
      application_uri TEXT NOT NULL,
      approved_by TEXT NOT NULL,
      approved_thumbprint TEXT,
      status TEXT NOT NULL CHECK (status IN ('waiting', 'running', 'done', 'failed', 'unsupported', 'stopped')),
      step TEXT NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      next_attempt_at TEXT,
      serial TEXT,
      applied_serial TEXT,
      reason TEXT,
      crl_delivered INTEGER,
      updated_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX opcua_push_jobs_due ON opcua_push_jobs (next_attempt_at) WHERE status != 'stopped';

    CREATE TABLE opcua_push_steps (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      device_id TEXT NOT NULL REFERENCES devices (id),
      attempt INTEGER NOT NULL,
      step TEXT NOT NULL,
      outcome TEXT NOT NULL CHECK (outcome IN ('begun', 'ok', 'failed')),
      detail TEXT,
      at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX opcua_push_steps_device ON opcua_push_steps (device_id, id);
  `,
};
