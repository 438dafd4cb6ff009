import type { Migration } from '../migrate.js';

/**
 * What an OPC UA server holds of the gateway's CRLs, so that a revocation
 * after its push reaches it (or is reported where it cannot): whether its
 * TrustList takes CRLs over OPC UA (Part 12 Write and CloseAndUpdate; NULL
 * until a push has tried), and which revocations the CRLs it was last
 * found to hold carry (a digest of issuer and serial of every entry).
 */
export const m0009OpcuaCrl: Migration = {
  version: 9,
  name: 'opcua crl delivery',
  sql: `
    ALTER TABLE opcua_push_jobs ADD COLUMN crl_writable INTEGER;
    ALTER TABLE opcua_push_jobs ADD COLUMN crl_revocations TEXT;
  `,
};
