import { generateKeyPairSync, sign } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CertError } from '../../../certs/errors.js';
import { bitString, oid, sequence, setOf, smallInteger, tlv, utf8String } from '../../../certs/x509/der.js';
import { OID } from '../../../certs/x509/oids.js';
import { derFrom, toPem } from '../../../certs/x509/pem.js';
import { caFixture } from '../../helpers/caFixture.js';
import { tempDir } from '../../helpers/daemon.js';
import { certText, opensslCsr } from '../../helpers/openssl.js';

/** A CSR with a CN of raw bytes (which our own name encoder would refuse), signed properly. */
function csrWithRawCommonName(cn: string): string {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const name = sequence(setOf(sequence(oid(OID.commonName), utf8String(cn))));
  const info = sequence(smallInteger(0), name, publicKey.export({ type: 'spki', format: 'der' }), tlv(0xa0));
  return toPem('CERTIFICATE REQUEST', sequence(info, sequence(oid(OID.ecdsaWithSha256)), bitString(sign('sha256', info, privateKey))));
}

describe('bad requests: each refused with a specific error, nothing recorded', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: ReturnType<typeof caFixture>;
  let good: string;
  beforeAll(async () => {
    tmp = tempDir();
    ca = caFixture(tmp.dir);
    good = await opensslCsr(tmp.dir, 'good', 'ec-p256');
  });
  afterAll(() => {
    ca.close();
    tmp.cleanup();
  });

  async function refused(request: Parameters<typeof ca.authority.issue>[0], code: string, message?: RegExp) {
    const before = ca.count();
    const err = await ca.authority.issue(request).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, `expected ${code}`).toBeInstanceOf(CertError);
    expect((err as CertError).code).toBe(code);
    if (message) expect((err as Error).message).toMatch(message);
    expect(ca.count()).toBe(before);
  }

  it('a CSR whose signature is broken (not signed by its key)', async () => {
    const der = Buffer.from(derFrom(good, ['CERTIFICATE REQUEST'], 'csr'));
    der[der.length - 5] = der[der.length - 5]! ^ 0x55;
    await refused({ profile: 'mqtt-device', identity: 'd1', csr: der }, 'CSR_SIGNATURE_INVALID', /does not hold the private key|cannot be verified/);
  });

  it('garbage, in PEM armour and bare', async () => {
    await refused({ profile: 'mqtt-device', identity: 'd1', csr: 'hello, I am a certificate request' }, 'CSR_MALFORMED');
    await refused(
      { profile: 'mqtt-device', identity: 'd1', csr: toPem('CERTIFICATE REQUEST', Buffer.from('30820101deadbeef', 'hex')) },
      'CSR_MALFORMED',
      /not valid DER/,
    );
    await refused({ profile: 'mqtt-device', identity: 'd1', csr: Buffer.from([0x30, 0x03, 0x02, 0x01]) }, 'CSR_MALFORMED');
  });

  it('an oversized CSR', async () => {
    await refused({ profile: 'mqtt-device', identity: 'd1', csr: good + 'A'.repeat(40_000) }, 'CSR_TOO_LARGE');
    const big = toPem('CERTIFICATE REQUEST', Buffer.concat([Buffer.from([0x30, 0x82, 0x4e, 0x20]), Buffer.alloc(20_000)]));
    await refused({ profile: 'mqtt-device', identity: 'd1', csr: big }, 'CSR_TOO_LARGE');
  });

  it('an RSA 1024 key', async () => {
    await refused({ profile: 'mqtt-device', identity: 'd1', csr: await opensslCsr(tmp.dir, 'rsa1024', 'rsa-1024') }, 'KEY_TOO_WEAK', /1024 bits is too weak/);
  });

  it('an unsupported curve (secp256k1)', async () => {
    await refused(
      { profile: 'mqtt-device', identity: 'd1', csr: await opensslCsr(tmp.dir, 'k1', 'ec-secp256k1') },
      'KEY_TYPE_UNSUPPORTED',
      /1\.3\.132\.0\.10 is not accepted/,
    );
  });

  it('an EC key for the RSA-only OPC UA profile', async () => {
    await refused({ profile: 'opcua-application', identity: 'urn:x:y', csr: good }, 'KEY_TYPE_NOT_ALLOWED');
  });

  it('a CSR asking for CA:TRUE or keyCertSign on a profile that refuses it', async () => {
    const caTrue = await opensslCsr(tmp.dir, 'catrue', 'ec-p256', { addext: ['basicConstraints=critical,CA:TRUE'] });
    await refused({ profile: 'mqtt-device', identity: 'd2', csr: caTrue }, 'CSR_REQUESTS_CA');
    const certSign = await opensslCsr(tmp.dir, 'certsign', 'ec-p256', { addext: ['keyUsage=critical,keyCertSign'] });
    await refused({ profile: 'broker-server', identity: 'gw', dnsNames: ['gw.local'], csr: certSign }, 'CSR_REQUESTS_CA');
  });

  it('a CSR asking for CA:TRUE on the OPC UA profile: issued, but as CA:FALSE without keyCertSign', async () => {
    const csr = await opensslCsr(tmp.dir, 'opcua-ca', 'rsa-2048', {
      addext: ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,digitalSignature'],
    });
    const issued = await ca.authority.issue({ profile: 'opcua-application', identity: 'urn:plant:selfsigned-habit', csr });
    writeFileSync(join(tmp.dir, 'opcua-ca.crt'), issued.record.pem);
    const text = await certText(tmp.dir, 'opcua-ca.crt');
    expect(text).toMatch(/Basic Constraints: critical\n\s+CA:FALSE/);
    expect(text).toMatch(/Key Usage: critical\n\s+Digital Signature, Non Repudiation, Key Encipherment, Data Encipherment\n/);
    expect(text).not.toMatch(/Certificate Sign/);
  });

  it('NUL or control characters in a name, from the CSR or from the request', async () => {
    await refused({ profile: 'mqtt-device', identity: 'd3', csr: csrWithRawCommonName('evil\u0000.example.com') }, 'NAME_INVALID', /control or NUL/);
    await refused({ profile: 'mqtt-device', identity: 'd3', csr: csrWithRawCommonName('bell\u0007') }, 'NAME_INVALID');
    await refused(
      { profile: 'opcua-application', identity: 'urn:a:b', commonName: 'Press\u0000 4', csr: await opensslCsr(tmp.dir, 'rsa-n', 'rsa-2048') },
      'NAME_INVALID',
    );
    await refused({ profile: 'broker-server', identity: 'gw', dnsNames: ['gw\u0000.evil.com'], csr: good }, 'NAME_INVALID');
  });

  it('identities and names that break the profile rules', async () => {
    await refused({ profile: 'mqtt-device', identity: 'has space', csr: good }, 'REQUEST_INVALID');
    await refused({ profile: 'mqtt-device', identity: 'x'.repeat(65), csr: good }, 'REQUEST_INVALID');
    await refused({ profile: 'mqtt-device', identity: 'd4', dnsNames: ['d4.local'], csr: good }, 'REQUEST_INVALID', /takes no dnsNames/);
    await refused({ profile: 'broker-server', identity: 'gw', csr: good }, 'REQUEST_INVALID', /at least one DNS name or IP/);
    await refused({ profile: 'broker-server', identity: 'gw', ipAddresses: ['999.1.1.1'], csr: good }, 'REQUEST_INVALID');
    await refused({ profile: 'opcua-application', identity: 'not a uri', csr: await opensslCsr(tmp.dir, 'rsa-u', 'rsa-2048') }, 'REQUEST_INVALID');
    await refused({ profile: 'root-ca-please', identity: 'x', csr: good }, 'PROFILE_UNKNOWN');
  });

  it('a CSR with an OID not in minimal form (a subidentifier padded with 0x80), though properly signed', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    // 2.5.4.3 (CN) is 55 04 03; 55 80 04 03 is the same arc padded, which DER forbids and openssl refuses.
    const paddedCn = tlv(0x06, Buffer.from([0x55, 0x80, 0x04, 0x03]));
    const info = sequence(smallInteger(0), sequence(setOf(sequence(paddedCn, utf8String('d5')))), publicKey.export({ type: 'spki', format: 'der' }), tlv(0xa0));
    const csr = toPem('CERTIFICATE REQUEST', sequence(info, sequence(oid(OID.ecdsaWithSha256)), bitString(sign('sha256', info, privateKey))));
    await refused({ profile: 'mqtt-device', identity: 'd5', csr }, 'CSR_MALFORMED', /not in minimal form/);
  });

  it('a CSR with a UUID OID (2.25.<128 bits>) in a requested extension is not malformed: issued', async () => {
    const csr = await opensslCsr(tmp.dir, 'uuid-ext', 'ec-p256', {
      subject: '/CN=d6',
      addext: ['2.25.329800735698586629295641978511506172918=ASN1:UTF8String:hello'],
    });
    const issued = await ca.authority.issue({ profile: 'mqtt-device', identity: 'd6', csr });
    expect(issued.record.identity).toBe('d6');
  });

  it('CSRs signed with SHA-1, MD5 or RSASSA-PSS: an unsupported signature algorithm, named', async () => {
    for (const [name, args, label] of [
      ['sha1', ['-sha1'], /sha1WithRSAEncryption is not accepted/],
      ['md5', ['-md5'], /md5WithRSAEncryption is not accepted/],
      ['pss', ['-sigopt', 'rsa_padding_mode:pss'], /RSASSA-PSS is not accepted/],
    ] as const) {
      const csr = await opensslCsr(tmp.dir, `sig-${name}`, 'rsa-2048', { args: [...args] });
      await refused({ profile: 'mqtt-device', identity: `d7-${name}`, csr }, 'CSR_SIGNATURE_ALGORITHM_UNSUPPORTED', label);
    }
  });

  it('a public key already bound to another device (clone alert)', async () => {
    const csr = await opensslCsr(tmp.dir, 'cloned', 'ec-p256');
    await ca.authority.issue({ profile: 'mqtt-device', identity: 'original', csr });
    await refused({ profile: 'mqtt-device', identity: 'impostor', csr }, 'KEY_BOUND_TO_OTHER_IDENTITY', /clone alert.*"original"/);
    await refused({ profile: 'agent-client', identity: 'impostor2', csr }, 'KEY_BOUND_TO_OTHER_IDENTITY');
  });
});
