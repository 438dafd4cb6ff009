import type { Migration } from '../migrate.js';

/**
 * The device inventory: one row per device with its state, every transition
 * in an audit table, the enrollment requests and their answers, enrollment
 * tokens (only their SHA-256 is kept), and the technicians' decisions
 * waiting for the daemon to carry them out.
 */
export const m0003Devices: Migration = {
  version: 3,
  name: 'devices',
  sql: `
    CREATE TABLE devices (
      id TEXT PRIMARY KEY,
      protocol TEXT NOT NULL CHECK (protocol IN ('mqtt', 'opcua')),
      name TEXT NOT NULL,
      state TEXT NOT NULL CHECK (state IN ('discovered', 'pending', 'provisioned', 'rejected', 'revoked', 'decommissioned')),
      -- Set by a technician's reject or revoke: further requests wait for a technician, whatever the rules say.
      blocked INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1)),
      -- Set by a technician's approve before the device asked: its next request is approved once.
      preapproved INTEGER NOT NULL DEFAULT 0 CHECK (preapproved IN (0, 1)),
      manufacturer TEXT,
      model TEXT,
      serial_number TEXT,
      hardware_revision TEXT,
      firmware_version TEXT,
      display_name TEXT,
      source TEXT NOT NULL DEFAULT '{}',
      certificate_serial TEXT,
      reason TEXT,
      online INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
      first_seen TEXT NOT NULL,
      last_seen TEXT NOT NULL,
      revision INTEGER NOT NULL DEFAULT 1,
      updated_at TEXT NOT NULL,
      UNIQUE (protocol, name)
    ) STRICT;
    CREATE INDEX devices_state ON devices (state);

    CREATE TABLE device_events (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      device_id TEXT NOT NULL REFERENCES devices (id),
      at TEXT NOT NULL,
      from_state TEXT,
      to_state TEXT NOT NULL,
      cause TEXT NOT NULL,
      actor TEXT NOT NULL,
      details TEXT
    ) STRICT;
    CREATE INDEX device_events_device ON device_events (device_id, id);

    CREATE TABLE enrollment_requests (
      device_id TEXT NOT NULL REFERENCES devices (id),
      request_id TEXT NOT NULL,
      csr_sha256 TEXT NOT NULL,
      -- SHA-256 of the CSR's public key: what a technician compares with the device before approving.
      spki_sha256 TEXT NOT NULL,
      csr TEXT NOT NULL,
      nameplate TEXT NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'issued', 'rejected')),
      reason TEXT NOT NULL,
      decided_by TEXT,
      token_id TEXT,
      certificate_serial TEXT,
      response_topic TEXT,
      correlation_data BLOB,
      received_at TEXT NOT NULL,
      decided_at TEXT,
      PRIMARY KEY (device_id, request_id)
    ) STRICT;
    CREATE INDEX enrollment_requests_open ON enrollment_requests (status) WHERE status IN ('pending', 'approved');

    CREATE TABLE enrollment_tokens (
      id TEXT PRIMARY KEY,
      token_sha256 TEXT NOT NULL UNIQUE,
      label TEXT NOT NULL,
      max_uses INTEGER NOT NULL CHECK (max_uses >= 1),
      uses INTEGER NOT NULL DEFAULT 0,
      expires_at TEXT NOT NULL,
      created_at TEXT NOT NULL,
      revoked_at TEXT
    ) STRICT;

    CREATE TABLE device_actions (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      device_id TEXT NOT NULL,
      action TEXT NOT NULL CHECK (action IN ('approve', 'reject', 'revoke', 'decommission')),
      -- approve: the request the technician checked (its key), so a later request cannot slip in.
      request_id TEXT,
      actor TEXT NOT NULL,
      reason TEXT NOT NULL,
      requested_at TEXT NOT NULL,
      done_at TEXT,
      outcome TEXT,
      error TEXT
    ) STRICT;
    CREATE INDEX device_actions_open ON device_actions (id) WHERE done_at IS NULL;
  `,
};
