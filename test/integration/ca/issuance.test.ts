import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IssueRequest } from '../../../certs/authority.js';
import { caFixture } from '../../helpers/caFixture.js';
import { tempDir } from '../../helpers/daemon.js';
import { certText, openssl, opensslCsr, type KeySpec } from '../../helpers/openssl.js';

describe('issuance checked by openssl, for every profile and key type', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: ReturnType<typeof caFixture>;
  beforeAll(() => {
    tmp = tempDir();
    ca = caFixture(tmp.dir);
  });
  afterAll(() => {
    ca.close();
    tmp.cleanup();
  });

  const cases: {
    profile: string;
    key: KeySpec;
    request: Omit<IssueRequest, 'csr' | 'profile'>;
    issuer: 'ec' | 'rsa';
    expect: RegExp[];
    absent?: RegExp[];
  }[] = [
    {
      profile: 'mqtt-device',
      key: 'ec-p256',
      request: { identity: 'sensor-17' },
      issuer: 'ec',
      expect: [
        /Subject: O = Test Plant, CN = sensor-17/,
        /CA:FALSE/,
        /Key Usage: critical\n\s+Digital Signature\n/,
        /Extended Key Usage: \n\s+TLS Web Client Authentication\n/,
        /ecdsa-with-SHA256/,
      ],
      absent: [/Subject Alternative Name/, /Server Authentication/],
    },
    {
      profile: 'mqtt-device',
      key: 'rsa-2048',
      request: { identity: 'plc.line-3' },
      issuer: 'ec',
      expect: [/CN = plc.line-3/, /Digital Signature, Key Encipherment/, /TLS Web Client Authentication/],
    },
    {
      profile: 'mqtt-device',
      key: 'ec-p384',
      request: { identity: 'valve_9' },
      issuer: 'ec',
      expect: [/CN = valve_9/, /Public-Key: \(384 bit\)/],
    },
    {
      profile: 'opcua-application',
      key: 'rsa-2048',
      request: { identity: 'urn:plant:press-4:opcua', commonName: 'Press 4', dnsNames: ['press-4.plant.local'], ipAddresses: ['127.0.0.1', '::1'] },
      issuer: 'rsa',
      expect: [
        /CN = Press 4/,
        /Digital Signature, Non Repudiation, Key Encipherment, Data Encipherment/,
        /TLS Web Server Authentication, TLS Web Client Authentication/,
        /URI:urn:plant:press-4:opcua, DNS:press-4.plant.local, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1/,
        /Signature Algorithm: sha256WithRSAEncryption/,
      ],
    },
    {
      profile: 'broker-server',
      key: 'ec-p256',
      request: { identity: 'gw-test', dnsNames: ['gateway.plant.local', 'localhost'], ipAddresses: ['127.0.0.1'] },
      issuer: 'ec',
      expect: [/CN = gw-test/, /TLS Web Server Authentication/, /DNS:gateway.plant.local, DNS:localhost, IP Address:127.0.0.1/],
      absent: [/Client Authentication/],
    },
    {
      profile: 'broker-server',
      key: 'rsa-2048',
      request: { identity: 'gw-test-rsa', ipAddresses: ['127.0.0.1'] },
      issuer: 'rsa',
      expect: [/TLS Web Server Authentication/, /Digital Signature, Key Encipherment/],
    },
    {
      profile: 'agent-client',
      key: 'ec-p256',
      request: { identity: 'gw-test' },
      issuer: 'ec',
      expect: [/URI:urn:edge-agent:gw-test/, /TLS Web Client Authentication/],
    },
    {
      profile: 'agent-client',
      key: 'rsa-2048',
      request: { identity: 'gw-test-opcua' },
      issuer: 'rsa',
      expect: [/URI:urn:edge-agent:gw-test-opcua/, /Digital Signature, Non Repudiation, Key Encipherment, Data Encipherment/],
    },
  ];

  cases.forEach((c, i) => {
    it(`${c.profile} from an openssl ${c.key} CSR verifies with openssl and carries the profile's extensions`, async () => {
      const csr = await opensslCsr(tmp.dir, `case${i}`, c.key, { subject: '/CN=whatever-the-device-asks/O=Not Ours' });
      const issued = await ca.authority.issue({ profile: c.profile, csr, ...c.request });
      expect(issued.record.issuer).toBe(c.issuer);
      const leaf = `case${i}.crt`;
      writeFileSync(join(tmp.dir, leaf), issued.record.pem);
      writeFileSync(join(tmp.dir, `case${i}.chain`), issued.chain.slice(0, -1).join(''));
      const verify = await openssl(
        [
          'verify',
          '-CAfile',
          join(ca.caDir, 'root.crt'),
          '-untrusted',
          `case${i}.chain`,
          '-purpose',
          c.profile === 'broker-server' ? 'sslserver' : 'sslclient',
          leaf,
        ],
        tmp.dir,
      );
      expect(verify.stdout.trim(), verify.stderr).toBe(`${leaf}: OK`);
      const text = await certText(tmp.dir, leaf);
      for (const pattern of c.expect) expect(text).toMatch(pattern);
      for (const pattern of c.absent ?? []) expect(text).not.toMatch(pattern);
      expect(text).not.toContain('whatever-the-device-asks');
      expect(text).not.toContain('Not Ours');
      // The private key openssl made matches the certificate we issued for its CSR.
      const modulus = await openssl(['x509', '-in', leaf, '-noout', '-pubkey'], tmp.dir);
      const fromKey = await openssl(['pkey', '-in', `case${i}.key`, '-pubout'], tmp.dir);
      expect(modulus.stdout).toBe(fromKey.stdout);
    });
  });

  it('records each certificate with serial, subject, profile, identity, validity, thumbprint and PEM', async () => {
    const csr = await opensslCsr(tmp.dir, 'recorded', 'ec-p256');
    const issued = await ca.authority.issue({ profile: 'mqtt-device', identity: 'recorded-1', csr });
    const row = ca.repository.get(issued.record.serial)!;
    expect(row).toMatchObject({
      profile: 'mqtt-device',
      identity: 'recorded-1',
      subject: 'O=Test Plant, CN=recorded-1',
      status: 'valid',
      pem: issued.record.pem,
    });
    writeFileSync(join(tmp.dir, 'recorded.crt'), issued.record.pem);
    const fp = await openssl(['x509', '-in', 'recorded.crt', '-noout', '-fingerprint', '-sha256', '-serial', '-enddate'], tmp.dir);
    expect(fp.stdout).toContain(`=${row.thumbprint.toUpperCase().match(/../g)!.join(':')}`);
    expect(fp.stdout).toContain(`serial=${row.serial.toUpperCase()}`);
    expect(new Date(fp.stdout.match(/notAfter=(.*)/)![1]!).getTime()).toBe(row.notAfter.getTime());
    expect(row.notAfter.getTime() - row.notBefore.getTime()).toBeGreaterThan(364 * 86_400_000);
  });
});
