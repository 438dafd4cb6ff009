import type { Migration } from '../migrate.js';

/**
 * Users of the local API and their tokens. A token is kept only as the
 * SHA-256 of its secret: shown once when made, never stored or logged.
 */
export const m0007Users: Migration = {
  version: 7,
  name: 'users and api tokens',
  sql: `
    CREATE TABLE users (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      name TEXT NOT NULL UNIQUE,
      role TEXT NOT NULL CHECK (role IN ('admin', 'technician', 'viewer')),
      disabled_at TEXT,
      created_at TEXT NOT NULL,
      created_by TEXT NOT NULL
    ) STRICT;

    CREATE TABLE api_tokens (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      user_id INTEGER NOT NULL REFERENCES users (id),
      secret_sha256 TEXT NOT NULL UNIQUE,
      label TEXT NOT NULL,
      created_at TEXT NOT NULL,
      expires_at TEXT,
      revoked_at TEXT,
      last_used_at TEXT
    ) STRICT;
    CREATE INDEX api_tokens_user ON api_tokens (user_id);
  `,
};
