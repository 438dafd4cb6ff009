import type { Migration } from '../migrate.js';

/**
 * Device configuration (docs/device-configuration.md). A profile is a named
 * document whose versions are never edited: a change adds a version, and
 * `config_profile_heads` says which version is in force (a rollback moves
 * the head back). `device_config` holds, per device, what the agent wants it
 * to run (profile, version and the SHA-256 of the values for that device),
 * what was published or written, what the device reported or was read back,
 * and the status. The desired state is committed before anything is sent, so
 * a crash between the commit and the publish is repaired by a resend of the
 * same version, which a device applies once. `device_config_log` is each
 * device's history (desired, published, reported, refused, drift).
 */
export const m0013DeviceConfiguration: Migration = {
  version: 13,
  name: 'device configuration',
  sql: `
    CREATE TABLE config_profiles (
      name TEXT NOT NULL,
      version INTEGER NOT NULL CHECK (version >= 1),
      protocol TEXT NOT NULL CHECK (protocol IN ('mqtt', 'opcua')),
      document TEXT NOT NULL,
      sha256 TEXT NOT NULL,
      created_at TEXT NOT NULL,
      created_by TEXT NOT NULL,
      PRIMARY KEY (name, version)
    ) STRICT;

    CREATE TABLE config_profile_heads (
      name TEXT PRIMARY KEY,
      version INTEGER NOT NULL,
      updated_at TEXT NOT NULL,
      updated_by TEXT NOT NULL,
      FOREIGN KEY (name, version) REFERENCES config_profiles (name, version)
    ) STRICT;

    CREATE TABLE device_labels (
      device_id TEXT NOT NULL REFERENCES devices (id),
      key TEXT NOT NULL,
      value TEXT NOT NULL,
      PRIMARY KEY (device_id, key)
    ) STRICT;

    CREATE TABLE device_config (
      device_id TEXT PRIMARY KEY REFERENCES devices (id),
      pinned_profile TEXT,
      profile TEXT,
      desired_version INTEGER,
      desired_sha256 TEXT,
      desired_at TEXT,
      published_version INTEGER,
      published_at TEXT,
      reported_version INTEGER,
      reported_sha256 TEXT,
      reported_at TEXT,
      status TEXT NOT NULL DEFAULT 'none' CHECK (status IN ('none', 'pending', 'in_sync', 'drifted', 'failed')),
      error TEXT,
      attempts INTEGER NOT NULL DEFAULT 0,
      next_attempt_at TEXT,
      checked_at TEXT,
      updated_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX device_config_due ON device_config (status, next_attempt_at);
    CREATE INDEX device_config_profile ON device_config (profile, desired_version);

    CREATE TABLE device_config_log (
      id INTEGER PRIMARY KEY,
      device_id TEXT NOT NULL REFERENCES devices (id),
      profile TEXT,
      version INTEGER,
      event TEXT NOT NULL,
      detail TEXT,
      at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX device_config_log_device ON device_config_log (device_id, id);
  `,
};
