import type { Migration } from '../migrate.js';

/**
 * A device by its certificate's serial. The trigger that carries a
 * certificate's status into its device's record (sync_certificate_status,
 * 0006) looks devices up by `certificate_serial`: without this index every
 * renewal or revocation scanned the whole inventory, and a site-wide
 * renewal of n devices cost n² row reads.
 */
export const m0015DeviceCertificateIndex: Migration = {
  version: 15,
  name: 'device certificate index',
  sql: `
    CREATE INDEX devices_certificate ON devices (certificate_serial) WHERE certificate_serial IS NOT NULL;
  `,
};
