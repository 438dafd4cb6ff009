import type { Migration } from '../migrate.js';

/**
 * People from the plant's directory (Active Directory) and their sessions.
 * A directory user is known by the objectGUID of their account, which stays
 * when the account is renamed or moved; `name` is the login name, unique
 * among directory users and (checked by the agent) among local users too.
 * A session keeps the SHA-256 of its secret only, and the role and grant
 * (scope, end date) the directory gave at its last check: the recheck
 * updates them, or ends the session with its reason.
 */
export const m0011DirectorySessions: Migration = {
  version: 11,
  name: 'directory users and sessions',
  sql: `
    CREATE TABLE directory_users (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      guid TEXT NOT NULL UNIQUE,
      name TEXT NOT NULL UNIQUE COLLATE NOCASE,
      dn TEXT NOT NULL,
      upn TEXT,
      display_name TEXT,
      role TEXT CHECK (role IS NULL OR role IN ('admin', 'technician', 'contractor', 'viewer')),
      grant_json TEXT,
      verifier TEXT,
      verifier_at TEXT,
      disabled_at TEXT,
      first_login_at TEXT NOT NULL,
      last_login_at TEXT NOT NULL
    ) STRICT;

    CREATE TABLE sessions (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      directory_user_id INTEGER NOT NULL REFERENCES directory_users (id),
      secret_sha256 TEXT NOT NULL UNIQUE,
      role TEXT NOT NULL CHECK (role IN ('admin', 'technician', 'contractor', 'viewer')),
      grant_json TEXT NOT NULL,
      cached INTEGER NOT NULL CHECK (cached IN (0, 1)),
      address TEXT NOT NULL,
      created_at TEXT NOT NULL,
      expires_at TEXT NOT NULL,
      verified_at TEXT NOT NULL,
      ended_at TEXT,
      end_reason TEXT
    ) STRICT;
    CREATE INDEX sessions_live ON sessions (directory_user_id) WHERE ended_at IS NULL;
  `,
};
