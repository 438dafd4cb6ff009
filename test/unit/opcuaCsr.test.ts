import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { derFrom } from '../../certs/x509/pem.js';
import { checkServerCsr } from '../../agent/onboarding/opcuaPolicy.js';
import { caFixture } from '../helpers/caFixture.js';
import { tempDir } from '../helpers/daemon.js';
import { opensslCsr } from '../helpers/openssl.js';

const URI = 'urn:plant1:press-7';

describe('the CSR an OPC UA server answers CreateSigningRequest with (made by openssl here)', () => {
  let tmp: ReturnType<typeof tempDir>;
  const csr = async (name: string, addext: string[]) =>
    derFrom(await opensslCsr(tmp.dir, name, 'rsa-2048', { subject: '/CN=Press 7/O=Plant', addext }), ['CERTIFICATE REQUEST'], 'CSR');
  beforeAll(() => (tmp = tempDir()));
  afterAll(() => tmp.cleanup());

  it("passes when its one SAN URI is the server's applicationUri", async () => {
    const good = await csr('good', [`subjectAltName=URI:${URI},IP:10.20.0.31`]);
    expect(() => checkServerCsr(good, URI)).not.toThrow();
  });

  it('refuses a CSR for another application, with two URIs, or with none', async () => {
    const other = await csr('other', ['subjectAltName=URI:urn:plant1:mixer-2']);
    const two = await csr('two', [`subjectAltName=URI:${URI},URI:urn:edge-agent:gw-1-opcua`]);
    const none = await csr('none', ['subjectAltName=DNS:press-7.plant']);
    expect(() => checkServerCsr(other, URI)).toThrow(
      /names urn:plant1:mixer-2 in its subjectAltName, not exactly the server's applicationUri urn:plant1:press-7/,
    );
    expect(() => checkServerCsr(two, URI)).toThrow(/names urn:plant1:press-7, urn:edge-agent:gw-1-opcua/);
    expect(() => checkServerCsr(none, URI)).toThrow(/names no URI/);
  });

  it('refuses a CSR whose signature does not match its key', async () => {
    const good = await csr('tampered', [`subjectAltName=URI:${URI}`]);
    const tampered = Buffer.from(good);
    tampered[tampered.length - 10]! ^= 0xff;
    expect(() => checkServerCsr(tampered, URI)).toThrow(/signature/i);
  });

  it("is the opcua-application profile's rule: the CA refuses the CSR when the server asks for itself, and issues when an operator names it", async () => {
    const other = await csr('other-at-ca', ['subjectAltName=URI:urn:plant1:mixer-2']);
    const ca = caFixture(tmp.dir);
    try {
      const asked = { profile: 'opcua-application' as const, identity: URI, csr: other, ipAddresses: ['10.20.0.31'] };
      await expect(ca.authority.issue({ ...asked, origin: 'requester' })).rejects.toMatchObject({
        code: 'NAME_INVALID',
        message: expect.stringMatching(/names urn:plant1:mixer-2 in its subjectAltName, not exactly the server's applicationUri/),
      });
      // An operator's issuance writes the SAN from the template whatever the CSR says.
      const issued = await ca.authority.issue({ ...asked, origin: 'operator' });
      expect(issued.record.identity).toBe(URI);
    } finally {
      ca.close();
    }
  });
});
