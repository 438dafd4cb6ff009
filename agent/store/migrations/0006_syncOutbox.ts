import type { Migration } from '../migrate.js';

/**
 * Upstream sync (CMMS). The outbox holds, per device, the latest revision
 * not yet acknowledged by the receiver: triggers on `devices` write it in the
 * same transaction as every change, whatever code made it, so a change can
 * never be committed without its outbox row, and a long outage costs one row
 * per changed device. Batches are stored whole (body and Idempotency-Key)
 * before they are sent, so a retry after a crash sends the same bytes under
 * the same key. Items the receiver refuses wait in dead letters.
 */
export const m0006SyncOutbox: Migration = {
  version: 6,
  name: 'sync outbox',
  sql: `
    CREATE TABLE sync_outbox (
      device_id TEXT PRIMARY KEY REFERENCES devices (id),
      revision INTEGER NOT NULL,
      queued_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX sync_outbox_age ON sync_outbox (queued_at, device_id);

    INSERT INTO sync_outbox (device_id, revision, queued_at) SELECT id, revision, updated_at FROM devices;

    CREATE TRIGGER sync_outbox_insert AFTER INSERT ON devices BEGIN
      INSERT INTO sync_outbox (device_id, revision, queued_at) VALUES (NEW.id, NEW.revision, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        ON CONFLICT (device_id) DO UPDATE SET revision = excluded.revision;
    END;
    CREATE TRIGGER sync_outbox_update AFTER UPDATE OF revision ON devices WHEN NEW.revision != OLD.revision BEGIN
      INSERT INTO sync_outbox (device_id, revision, queued_at) VALUES (NEW.id, NEW.revision, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        ON CONFLICT (device_id) DO UPDATE SET revision = max(revision, excluded.revision);
    END;

    -- A device's record carries its certificate's status: a revocation is a change of the device.
    CREATE TRIGGER sync_certificate_status AFTER UPDATE OF status ON certificates WHEN NEW.status != OLD.status BEGIN
      UPDATE devices SET revision = revision + 1, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE certificate_serial = NEW.serial;
    END;

    CREATE TABLE sync_batches (
      key TEXT PRIMARY KEY,
      created_at TEXT NOT NULL,
      items TEXT NOT NULL,
      body TEXT NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0
    ) STRICT;

    CREATE TABLE sync_dead_letters (
      device_id TEXT PRIMARY KEY REFERENCES devices (id),
      revision INTEGER NOT NULL,
      status INTEGER,
      error TEXT NOT NULL,
      at TEXT NOT NULL
    ) STRICT;

    CREATE TABLE sync_state (
      key TEXT PRIMARY KEY,
      value TEXT NOT NULL
    ) STRICT;
  `,
};
