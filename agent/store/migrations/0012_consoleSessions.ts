import type { Migration } from '../migrate.js';

/**
 * The web console's sessions. The browser's cookie holds a secret of its
 * own (stored here as its SHA-256), never the API token or directory
 * session it was signed in with: a cookie sent to another service on the
 * same host name (cookies are not kept apart by port) or left in a browser
 * profile is worth nothing once the person signs out. Each row names the
 * credential it stands for by that credential's SHA-256, so the console
 * session ends whenever the credential does (revoked, expired, a directory
 * session ended) as well as at its own sign-out.
 */
export const m0012ConsoleSessions: Migration = {
  version: 12,
  name: 'console sessions',
  sql: `
    CREATE TABLE console_sessions (
      id INTEGER PRIMARY KEY,
      secret_sha256 TEXT NOT NULL UNIQUE,
      credential_sha256 TEXT NOT NULL,
      credential_kind TEXT NOT NULL CHECK (credential_kind IN ('token', 'session')),
      created_at TEXT NOT NULL,
      expires_at TEXT,
      ended_at TEXT
    ) STRICT;
  `,
};
