import type { Migration } from '../migrate.js';

/**
 * "Every device accounted for" (docs/report.md). `sightings` are what the
 * transports observed that no inventory row explains (a client on the
 * provisioning listener that never enrolled, an announcement without a
 * certificate, an id presented with another key, a revoked device trying to
 * connect), one row per kind and subject, counted and time-stamped rather
 * than written per message. `findings` are the report's lines: opened when
 * an evaluation first finds them, resolved when it no longer does; at most
 * one open finding per kind and subject. `report_events` is the durable
 * outbox of the events sent upstream (POST .../events:batch): written in the
 * same transaction as the finding it tells of, deleted once the receiver
 * stored it, kept with the receiver's error if it refused it.
 */
export const m0014Report: Migration = {
  version: 14,
  name: 'device report',
  sql: `
    CREATE TABLE sightings (
      id INTEGER PRIMARY KEY,
      kind TEXT NOT NULL,
      protocol TEXT NOT NULL CHECK (protocol IN ('mqtt', 'opcua')),
      subject TEXT NOT NULL,
      evidence TEXT NOT NULL,
      first_seen TEXT NOT NULL,
      last_seen TEXT NOT NULL,
      count INTEGER NOT NULL DEFAULT 1,
      UNIQUE (kind, subject)
    ) STRICT;

    CREATE TABLE findings (
      id INTEGER PRIMARY KEY,
      kind TEXT NOT NULL,
      subject TEXT NOT NULL,
      device_id TEXT,
      summary TEXT NOT NULL,
      evidence TEXT NOT NULL,
      first_seen TEXT NOT NULL,
      last_seen TEXT NOT NULL,
      opened_at TEXT NOT NULL,
      resolved_at TEXT
    ) STRICT;
    CREATE UNIQUE INDEX findings_open ON findings (kind, subject) WHERE resolved_at IS NULL;
    CREATE INDEX findings_kind ON findings (resolved_at, kind);

    CREATE TABLE report_events (
      id INTEGER PRIMARY KEY,
      event_id TEXT NOT NULL UNIQUE,
      type TEXT NOT NULL,
      body TEXT NOT NULL,
      queued_at TEXT NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      refused_status INTEGER,
      refused_error TEXT,
      refused_at TEXT
    ) STRICT;
    CREATE INDEX report_events_queue ON report_events (refused_at, id);
  `,
};
