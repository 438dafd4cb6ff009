import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CertError } from '../../../certs/errors.js';
import { parseCsr } from '../../../certs/x509/csr.js';
import { bitString, children, nullValue, oid, read, sequence, setOf, smallInteger, tlv, utf8String } from '../../../certs/x509/der.js';
import { OID } from '../../../certs/x509/oids.js';
import { derFrom, toPem } from '../../../certs/x509/pem.js';
import { caFixture } from '../../helpers/caFixture.js';
import { tempDir } from '../../helpers/daemon.js';
import { certText, opensslCsr } from '../../helpers/openssl.js';

const CN = sequence(setOf(sequence(oid(OID.commonName), utf8String('x'))));
const EC_SIG = sequence(oid(OID.ecdsaWithSha256));
const RSA_SIG = sequence(oid(OID.sha256WithRsa), nullValue);

/** A CSR assembled piece by piece (to say things openssl would never write), signed with `key`. */
function craft(o: {
  key: KeyObject;
  spki: Buffer;
  name?: Buffer;
  sigAlg?: Buffer;
  attributes?: Buffer | null;
  extraBody?: Buffer[];
  extraTop?: Buffer[];
}): string {
  const body = [smallInteger(0), o.name ?? CN, o.spki, ...(o.attributes === null ? [] : [o.attributes ?? tlv(0xa0)]), ...(o.extraBody ?? [])];
  const info = sequence(...body);
  const sigAlg = o.sigAlg ?? (o.key.asymmetricKeyType === 'rsa' ? RSA_SIG : EC_SIG);
  return toPem('CERTIFICATE REQUEST', sequence(info, sigAlg, bitString(sign('sha256', info, o.key)), ...(o.extraTop ?? [])));
}

const spkiOf = (key: KeyObject) => key.export({ type: 'spki', format: 'der' });

describe('hostile and tricky requests', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: ReturnType<typeof caFixture>;
  const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  beforeAll(() => {
    tmp = tempDir();
    ca = caFixture(tmp.dir);
  });
  afterAll(() => {
    ca.close();
    tmp.cleanup();
  });

  async function code(request: Parameters<typeof ca.authority.issue>[0]): Promise<string> {
    const before = ca.count();
    const err = await ca.authority.issue(request).then(
      () => 'ISSUED',
      (e: unknown) => (e instanceof CertError ? e.code : `NOT A CertError: ${String(e)}`),
    );
    if (err !== 'ISSUED') expect(ca.count()).toBe(before);
    return err;
  }

  it('one key in another byte form is still the same key: the clone alert holds, and the certificate carries the canonical form', async () => {
    const rsaSpki = read(spkiOf(rsa.publicKey));
    const [alg, bits] = children(rsaSpki);
    // The same RSA key without the NULL parameters, and with a non-minimal modulus INTEGER.
    const noNull = sequence(sequence(children(alg!)[0]!.raw), bits!.raw);
    const [n, e] = children(read(bits!.value.subarray(1)));
    const padded = sequence(alg!.raw, bitString(sequence(tlv(0x02, Buffer.from([0, 0]), n!.value), e!.raw)));
    const first = await ca.authority.issue({ profile: 'mqtt-device', identity: 'rsa-owner', csr: craft({ key: rsa.privateKey, spki: noNull }) });
    expect(await code({ profile: 'mqtt-device', identity: 'rsa-thief', csr: craft({ key: rsa.privateKey, spki: padded }) })).toBe(
      'KEY_BOUND_TO_OTHER_IDENTITY',
    );
    expect(await code({ profile: 'mqtt-device', identity: 'rsa-thief-2', csr: craft({ key: rsa.privateKey, spki: spkiOf(rsa.publicKey) }) })).toBe(
      'KEY_BOUND_TO_OTHER_IDENTITY',
    );
    writeFileSync(join(tmp.dir, 'canonical.crt'), first.record.pem);
    const text = await certText(tmp.dir, 'canonical.crt');
    expect(text).toMatch(/Public-Key: \(2048 bit\)/);
    // The certificate holds the key exactly as node:crypto encodes it (with NULL parameters).
    const der = derFrom(first.record.pem, ['CERTIFICATE'], 'cert');
    expect(der.includes(spkiOf(rsa.publicKey))).toBe(true);
  });

  it('refuses structures with extra or missing elements', async () => {
    const spki = spkiOf(ec.publicKey);
    const [alg, bits] = children(read(spki));
    expect(
      await code({ profile: 'mqtt-device', identity: 'e1', csr: craft({ key: ec.privateKey, spki: sequence(alg!.raw, bits!.raw, utf8String('INJECTED')) }) }),
    ).toBe('CSR_MALFORMED');
    expect(
      await code({
        profile: 'mqtt-device',
        identity: 'e2',
        csr: craft({ key: ec.privateKey, spki: sequence(sequence(...children(alg!).map((c) => c.raw), utf8String('INJECTED')), bits!.raw) }),
      }),
    ).toBe('CSR_MALFORMED');
    expect(await code({ profile: 'mqtt-device', identity: 'e3', csr: craft({ key: ec.privateKey, spki, extraTop: [smallInteger(1)] }) })).toBe('CSR_MALFORMED');
    expect(await code({ profile: 'mqtt-device', identity: 'e4', csr: craft({ key: ec.privateKey, spki, extraBody: [smallInteger(1)] }) })).toBe(
      'CSR_MALFORMED',
    );
    expect(await code({ profile: 'mqtt-device', identity: 'e5', csr: craft({ key: ec.privateKey, spki, attributes: null }) })).toBe('CSR_MALFORMED');
    expect(
      await code({ profile: 'mqtt-device', identity: 'e6', csr: craft({ key: ec.privateKey, spki, sigAlg: sequence(oid(OID.ecdsaWithSha256), nullValue) }) }),
    ).toBe('CSR_MALFORMED');
    expect(
      await code({
        profile: 'mqtt-device',
        identity: 'e7',
        csr: craft({ key: ec.privateKey, spki, name: sequence(sequence(sequence(oid(OID.commonName), utf8String('x')))) }),
      }),
    ).toBe('CSR_MALFORMED');
    expect(
      await code({
        profile: 'mqtt-device',
        identity: 'e8',
        csr: craft({ key: ec.privateKey, spki, name: sequence(setOf(sequence(oid(OID.commonName), tlv(0x1e, Buffer.from([0, 0x41, 0]))))) }),
      }),
    ).toBe('NAME_INVALID');
  });

  it('answers three identical concurrent requests with one certificate', async () => {
    const csr = await opensslCsr(tmp.dir, 'triplet', 'ec-p256');
    const before = ca.count();
    const results = await Promise.all([1, 2, 3].map(() => ca.authority.issue({ profile: 'mqtt-device', identity: 'triplet', csr })));
    expect(new Set(results.map((r) => r.record.serial)).size).toBe(1);
    expect(results.filter((r) => r.repeated)).toHaveLength(2);
    expect(ca.count()).toBe(before + 1);
    expect(ca.repository.current('mqtt-device', 'triplet')?.serial).toBe(results[0]!.record.serial);
  });

  it('treats the same key with other names as a reuse, not a repeat', async () => {
    const csr = await opensslCsr(tmp.dir, 'renamed', 'ec-p256');
    await ca.authority.issue({ profile: 'broker-server', identity: 'broker-1', dnsNames: ['a.local'], csr });
    expect(await code({ profile: 'broker-server', identity: 'broker-1', dnsNames: ['b.local'], csr })).toBe('KEY_REUSE_NOT_ALLOWED');
  });

  it('refuses a key whose certificate was revoked for key compromise, even where key reuse is allowed', async () => {
    const lenient = caFixture(join(tmp.dir, 'lenient'), { allowKeyReuse: true });
    const csr = await opensslCsr(tmp.dir, 'compromised', 'ec-p256');
    const issued = await lenient.authority.issue({ profile: 'mqtt-device', identity: 'stolen', csr });
    lenient.authority.revoke(issued.record.serial, 'keyCompromise');
    const err = await lenient.authority.issue({ profile: 'mqtt-device', identity: 'stolen', csr, renew: true }).catch((e: unknown) => e);
    expect((err as CertError).code).toBe('KEY_COMPROMISED');
    lenient.close();
  });

  it('never lets anything but a CertError out of parseCsr, whatever the bytes (2,000 seeded mutations)', async () => {
    const base = derFrom(await opensslCsr(tmp.dir, 'fuzz', 'ec-p256'), ['CERTIFICATE REQUEST'], 'csr');
    let seed = 12345;
    const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const outcomes = { parsed: 0, refused: 0 };
    for (let i = 0; i < 2000; i++) {
      const mutated = Buffer.from(base);
      const edits = 1 + Math.floor(random() * 4);
      for (let k = 0; k < edits; k++) mutated[Math.floor(random() * mutated.length)] = Math.floor(random() * 256);
      const input = random() < 0.2 ? mutated.subarray(0, Math.floor(random() * mutated.length)) : mutated;
      try {
        parseCsr(input);
        outcomes.parsed++;
      } catch (err) {
        if (!(err instanceof CertError)) throw new Error(`mutation ${i} escaped as ${String(err)}`);
        outcomes.refused++;
      }
    }
    expect(outcomes.refused).toBeGreaterThan(1000);
  });

  it("issues nothing that outlives the issuing CA: near its end, notAfter is the CA's own", async () => {
    let clock = new Date();
    const nearEnd = caFixture(join(tmp.dir, 'near'), { now: () => clock });
    const issuerEnd = nearEnd.authority.issuer('ec').notAfter;
    clock = new Date(issuerEnd.getTime() - 10 * 86_400_000); // a 365-day certificate asked for 10 days before the end
    const issued = await nearEnd.authority.issue({ profile: 'mqtt-device', identity: 'short-lived', csr: await opensslCsr(tmp.dir, 'short', 'ec-p256') });
    expect(issued.record.notAfter.getTime()).toBe(issuerEnd.getTime());
    clock = new Date(issuerEnd.getTime() + 1000);
    const err = await nearEnd.authority
      .issue({ profile: 'mqtt-device', identity: 'too-late', csr: await opensslCsr(tmp.dir, 'late', 'ec-p256') })
      .catch((e: unknown) => e);
    expect((err as CertError).code).toBe('CA_EXPIRED');
    nearEnd.close();
  });

  it('refuses malformed attributes, extensions, NULLs and names that openssl would refuse', async () => {
    const spki = spkiOf(ec.publicKey);
    const attr = (a: Buffer) => tlv(0xa0, a);
    const extReq = (ext: Buffer) => attr(sequence(oid(OID.extensionRequest), setOf(sequence(ext))));
    const cases: [string, string, string][] = [
      [
        'RSA parameters NULL with content',
        craft({
          key: rsa.privateKey,
          spki: sequence(sequence(oid(OID.rsaEncryption), tlv(0x05, Buffer.from([1]))), children(read(spkiOf(rsa.publicKey)))[1]!.raw),
        }),
        'CSR_MALFORMED',
      ],
      [
        'signature algorithm NULL with content',
        craft({ key: rsa.privateKey, spki: spkiOf(rsa.publicKey), sigAlg: sequence(oid(OID.sha256WithRsa), tlv(0x05, Buffer.from([0]))) }),
        'CSR_MALFORMED',
      ],
      [
        'an attribute whose type is not an OID',
        craft({ key: ec.privateKey, spki, attributes: attr(sequence(smallInteger(1), setOf(smallInteger(2)))) }),
        'CSR_MALFORMED',
      ],
      [
        'an extension with four fields',
        craft({
          key: ec.privateKey,
          spki,
          attributes: extReq(sequence(oid(OID.keyUsage), tlv(0x01, Buffer.from([0xff])), tlv(0x04, Buffer.from([0x03, 0x02, 0x07, 0x80])), smallInteger(1))),
        }),
        'CSR_MALFORMED',
      ],
      [
        'a critical flag that is not DER TRUE',
        craft({
          key: ec.privateKey,
          spki,
          attributes: extReq(sequence(oid(OID.keyUsage), tlv(0x01, Buffer.from([0x01])), tlv(0x04, Buffer.from([0x03, 0x02, 0x07, 0x80])))),
        }),
        'CSR_MALFORMED',
      ],
      [
        'invalid UTF-8 in the CN',
        craft({ key: ec.privateKey, spki, name: sequence(setOf(sequence(oid(OID.commonName), tlv(0x0c, Buffer.from([0x66, 0xc3, 0x28]))))) }),
        'NAME_INVALID',
      ],
      [
        'a multi-valued name component out of DER order',
        craft({
          key: ec.privateKey,
          spki,
          name: sequence(tlv(0x31, sequence(oid(OID.organization), utf8String('b')), sequence(oid(OID.commonName), utf8String('a')))),
        }),
        'CSR_MALFORMED',
      ],
    ];
    for (const [name, csr, expected] of cases) expect(await code({ profile: 'mqtt-device', identity: 'strict-1', csr }), name).toBe(expected);
  });

  it('revokes every certificate of a key when one of them is revoked for key compromise', async () => {
    const lenient = caFixture(join(tmp.dir, 'siblings'), { allowKeyReuse: true });
    const csr = await opensslCsr(tmp.dir, 'shared', 'ec-p256');
    const asClient = await lenient.authority.issue({ profile: 'agent-client', identity: 'gw-shared', csr });
    const asServer = await lenient.authority.issue({ profile: 'broker-server', identity: 'gw-shared', dnsNames: ['gw.local'], csr });
    const { revoked, alsoRevoked } = lenient.authority.revoke(asClient.record.serial, 'keyCompromise');
    expect(revoked.serial).toBe(asClient.record.serial);
    expect(alsoRevoked.map((r) => r.serial)).toEqual([asServer.record.serial]);
    expect(lenient.repository.get(asServer.record.serial)).toMatchObject({ status: 'revoked', revocationReason: 'keyCompromise' });
    expect(
      lenient.repository
        .revokedBy('ec', new Date())
        .map((r) => r.serial)
        .sort(),
    ).toEqual([asClient.record.serial, asServer.record.serial].sort());
    // Revoking for another reason touches only the one certificate.
    const other = await lenient.authority.issue({ profile: 'mqtt-device', identity: 'solo', csr: await opensslCsr(tmp.dir, 'solo', 'ec-p256') });
    expect(lenient.authority.revoke(other.record.serial, 'cessationOfOperation').alsoRevoked).toEqual([]);
    lenient.close();
  });

  it('lets one of two concurrent requests for one identity with different keys win, and tells the other to retry', async () => {
    const csrs = [await opensslCsr(tmp.dir, 'race-a', 'ec-p256'), await opensslCsr(tmp.dir, 'race-b', 'ec-p256')];
    // Both issued in the same turn of the event loop: they meet in one grouped commit.
    const [a, b] = await Promise.all(csrs.map((csr) => ca.authority.issue({ profile: 'mqtt-device', identity: 'raced', csr }).catch((e: unknown) => e)));
    const outcomes = [a, b].map((x) => (x instanceof CertError ? x.code : 'ISSUED')).sort();
    expect(outcomes).toEqual(['CONCURRENT_REQUEST', 'ISSUED']);
    const winner = [a, b].find((x) => !(x instanceof CertError)) as Awaited<ReturnType<typeof ca.authority.issue>>;
    expect(ca.repository.current('mqtt-device', 'raced')?.serial).toBe(winner.record.serial);
  });

  it('repeats only a certificate still valid, and compares IP addresses in their encoded form', async () => {
    let clock = new Date();
    const timed = caFixture(join(tmp.dir, 'timed'), { now: () => clock });
    const csr = await opensslCsr(tmp.dir, 'v6', 'ec-p256');
    const first = await timed.authority.issue({ profile: 'broker-server', identity: 'v6-broker', ipAddresses: ['::1'], csr });
    const same = await timed.authority.issue({ profile: 'broker-server', identity: 'v6-broker', ipAddresses: ['0:0:0:0:0:0:0:1'], csr });
    expect(same.repeated).toBe(true);
    expect(same.record.serial).toBe(first.record.serial);
    clock = new Date(first.record.notAfter.getTime() + 86_400_000);
    const err = await timed.authority.issue({ profile: 'broker-server', identity: 'v6-broker', ipAddresses: ['::1'], csr }).catch((e: unknown) => e);
    expect((err as CertError).code).toBe('KEY_REUSE_NOT_ALLOWED');
    timed.close();
  });
});
