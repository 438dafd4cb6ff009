import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crlDecision, crlEntries, revocationDigest } from '../../agent/onboarding/opcuaCrl.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import { caFixture } from '../helpers/caFixture.js';
import { tempDir } from '../helpers/daemon.js';
import { openssl } from '../helpers/openssl.js';

describe("what an OPC UA server's CRLs lack after a revocation", () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: ReturnType<typeof caFixture>;
  /** The RSA issuing CA's CRL as published now (what an OPC UA TrustList holds as trusted CRL). */
  const rsaCrl = () => ca.authority.crls(24).find((c) => c.issuer === 'rsa')!.der;
  beforeAll(() => {
    tmp = tempDir();
    ca = caFixture(tmp.dir);
  });
  afterAll(() => {
    ca.close();
    tmp.cleanup();
  });

  it('reads the serials a CRL revokes as openssl does', async () => {
    const issued = await ca.authority.issue({
      profile: 'opcua-application',
      identity: 'urn:plant1:crl-a',
      csr: buildCsr(SoftwareKey.generate('rsa-2048'), encodeName({ commonName: 'a' })),
    });
    ca.authority.revoke(issued.record.serial, 'keyCompromise');
    const der = rsaCrl();
    writeFileSync(join(tmp.dir, 'rsa.crl'), der);
    const text = (await openssl(['crl', '-inform', 'DER', '-in', 'rsa.crl', '-noout', '-text'], tmp.dir)).stdout;
    const number = (hex: string) => BigInt(`0x${hex}`);
    const listed = [...text.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => number(m[1]!));
    expect(listed).toContain(number(issued.record.serial));
    expect(crlEntries(der).serials.map(number)).toEqual(listed);
  });

  it('is unchanged by a CRL published again with the same revocations, and changed by one more', async () => {
    const before = rsaCrl();
    const again = rsaCrl();
    expect(again.equals(before)).toBe(false);
    expect(revocationDigest([again])).toBe(revocationDigest([before]));
    // A revocation by the EC issuing CA (an MQTT device) is not in the RSA CA's CRL.
    const device = await ca.authority.issue({
      profile: 'mqtt-device',
      identity: 'crl-device',
      csr: buildCsr(SoftwareKey.generate('ec-p256'), encodeName({ commonName: 'd' })),
    });
    ca.authority.revoke(device.record.serial, 'unspecified');
    expect(revocationDigest([rsaCrl()])).toBe(revocationDigest([before]));
    const server = await ca.authority.issue({
      profile: 'opcua-application',
      identity: 'urn:plant1:crl-b',
      csr: buildCsr(SoftwareKey.generate('rsa-2048'), encodeName({ commonName: 'b' })),
    });
    ca.authority.revoke(server.record.serial, 'superseded');
    expect(revocationDigest([rsaCrl()])).not.toBe(revocationDigest([before]));
  });

  it.each([
    ['holds the current revocations', { writable: false, revocations: 'd1' }, 'current'],
    ['lacks one and its TrustList took a write', { writable: true, revocations: 'd0' }, 'push'],
    ['lacks one and was never tried with a write', { revocations: 'd0' }, 'push'],
    ['lacks one and its TrustList took no write', { writable: false, revocations: 'd0' }, 'cannot'],
    ['holds CRLs not known (a job from before the digest)', { writable: false }, 'cannot'],
  ] as const)('decides for a server that %s', (_, server, decision) => {
    expect(crlDecision(server, 'd1')).toBe(decision);
  });
});
