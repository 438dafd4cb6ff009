import type { Migration } from '../migrate.js';

/**
 * Every certificate the CA issued, the binding of each public key to one
 * identity (clone detection), and the CRL number per issuing CA. Times are
 * ISO-8601 UTC strings, which sort as text.
 */
export const m0002Certificates: Migration = {
  version: 2,
  name: 'certificates',
  sql: `
    CREATE TABLE certificates (
      serial TEXT PRIMARY KEY,
      issuer TEXT NOT NULL CHECK (issuer IN ('ec', 'rsa')),
      profile TEXT NOT NULL,
      identity TEXT NOT NULL,
      subject TEXT NOT NULL,
      san TEXT NOT NULL,
      not_before TEXT NOT NULL,
      not_after TEXT NOT NULL,
      renewal_due_at TEXT NOT NULL,
      thumbprint TEXT NOT NULL UNIQUE,
      spki_sha256 TEXT NOT NULL,
      pem TEXT NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('valid', 'revoked', 'superseded')),
      issued_at TEXT NOT NULL,
      revoked_at TEXT,
      revocation_reason TEXT,
      superseded_by TEXT REFERENCES certificates (serial) DEFERRABLE INITIALLY DEFERRED,
      renewal_notified_at TEXT
    ) STRICT;
    CREATE UNIQUE INDEX certificates_current ON certificates (profile, identity) WHERE status = 'valid';
    CREATE INDEX certificates_identity ON certificates (identity);
    CREATE INDEX certificates_key ON certificates (spki_sha256);
    CREATE INDEX certificates_expiry ON certificates (not_after) WHERE status = 'valid';
    CREATE INDEX certificates_renewal ON certificates (renewal_due_at) WHERE status = 'valid' AND renewal_notified_at IS NULL;
    CREATE INDEX certificates_revoked ON certificates (issuer) WHERE status = 'revoked';

    CREATE TABLE key_bindings (
      spki_sha256 TEXT PRIMARY KEY,
      identity TEXT NOT NULL,
      profile TEXT NOT NULL,
      bound_at TEXT NOT NULL
    ) STRICT;

    CREATE TABLE crl_numbers (
      issuer TEXT PRIMARY KEY CHECK (issuer IN ('ec', 'rsa')),
      last_number INTEGER NOT NULL
    ) STRICT;
  `,
};
