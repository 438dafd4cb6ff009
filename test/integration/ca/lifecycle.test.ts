import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CertError } from '../../../certs/errors.js';
import { SoftwareKey } from '../../../certs/keys/backend.js';
import { buildCsr } from '../../../certs/x509/csrBuilder.js';
import { encodeName } from '../../../certs/x509/name.js';
import { caFixture } from '../../helpers/caFixture.js';
import { tempDir } from '../../helpers/daemon.js';
import { openssl, opensslCsr } from '../../helpers/openssl.js';

const p256Csr = () => buildCsr(SoftwareKey.generate('ec-p256'), encodeName({ commonName: 'x' }));

describe('renewal, repeats, revocation and serials', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => tmp.cleanup());

  it('renews from a new CSR: the old certificate is superseded, the new one is current', async () => {
    const ca = caFixture(tmp.dir);
    const first = await ca.authority.issue({ profile: 'mqtt-device', identity: 'pump-1', csr: p256Csr() });
    const second = await ca.authority.issue({ profile: 'mqtt-device', identity: 'pump-1', csr: p256Csr() });
    expect(second.supersedes).toBe(first.record.serial);
    expect(ca.repository.get(first.record.serial)).toMatchObject({ status: 'superseded', supersededBy: second.record.serial });
    expect(ca.repository.current('mqtt-device', 'pump-1')?.serial).toBe(second.record.serial);
    ca.close();
  });

  it('answers the same request again with the certificate already issued (a lost response), issuing nothing new', async () => {
    const ca = caFixture(tmp.dir);
    const csr = p256Csr();
    const first = await ca.authority.issue({ profile: 'mqtt-device', identity: 'pump-2', csr });
    const again = await ca.authority.issue({ profile: 'mqtt-device', identity: 'pump-2', csr });
    expect(again.repeated).toBe(true);
    expect(again.record.serial).toBe(first.record.serial);
    expect(ca.count()).toBe(1);
    ca.close();
  });

  it('refuses renewal with the same key unless ca.allowKeyReuse', async () => {
    const strict = caFixture(join(tmp.dir, 'strict'));
    const csr = p256Csr();
    await strict.authority.issue({ profile: 'mqtt-device', identity: 'pump-3', csr });
    const err = await strict.authority.issue({ profile: 'mqtt-device', identity: 'pump-3', csr, renew: true }).catch((e: unknown) => e);
    expect((err as CertError).code).toBe('KEY_REUSE_NOT_ALLOWED');
    expect(strict.count()).toBe(1);
    strict.close();

    const lenient = caFixture(join(tmp.dir, 'lenient'), { allowKeyReuse: true });
    const a = await lenient.authority.issue({ profile: 'mqtt-device', identity: 'pump-3', csr });
    const b = await lenient.authority.issue({ profile: 'mqtt-device', identity: 'pump-3', csr, renew: true });
    expect(b.supersedes).toBe(a.record.serial);
    lenient.close();
  });

  it('announces a certificate once it passes two thirds of its lifetime, once', async () => {
    const ca = caFixture(tmp.dir);
    const issued = await ca.authority.issue({ profile: 'mqtt-device', identity: 'pump-4', csr: p256Csr() });
    const { notBefore, notAfter } = issued.record;
    const twoThirds = new Date(notBefore.getTime() + ((notAfter.getTime() - notBefore.getTime()) * 2) / 3);
    expect(ca.repository.takeRenewalDue(new Date(twoThirds.getTime() - 60_000))).toEqual([]);
    expect(ca.repository.takeRenewalDue(new Date(twoThirds.getTime() + 60_000)).map((r) => r.serial)).toEqual([issued.record.serial]);
    expect(ca.repository.takeRenewalDue(new Date(twoThirds.getTime() + 120_000))).toEqual([]);
    expect(ca.repository.countRenewalDue(new Date(twoThirds.getTime() + 60_000))).toBe(1);
    ca.close();
  });

  it('puts a revoked certificate in a v2 CRL that openssl -crl_check honours; the others still verify', async () => {
    const ca = caFixture(tmp.dir);
    const revoked = await ca.authority.issue({ profile: 'mqtt-device', identity: 'lost-1', csr: await opensslCsr(tmp.dir, 'lost', 'ec-p256') });
    const kept = await ca.authority.issue({ profile: 'mqtt-device', identity: 'kept-1', csr: await opensslCsr(tmp.dir, 'kept', 'ec-p256') });
    const rsaRevoked = await ca.authority.issue({ profile: 'opcua-application', identity: 'urn:plant:old', csr: await opensslCsr(tmp.dir, 'old', 'rsa-2048') });
    ca.authority.revoke(revoked.record.serial.toUpperCase().match(/../g)!.join(':'), 'keyCompromise');
    ca.authority.revoke(rsaRevoked.record.serial, 'cessationOfOperation');
    const err = (() => {
      try {
        ca.authority.revoke(revoked.record.serial, 'superseded');
      } catch (e) {
        return e as CertError;
      }
    })();
    expect(err?.code).toBe('CERT_ALREADY_REVOKED');
    expect(
      (() => {
        try {
          ca.authority.revoke('abcdef', 'unspecified');
        } catch (e) {
          return (e as CertError).code;
        }
      })(),
    ).toBe('CERT_NOT_FOUND');

    const crls = ca.authority.crls(24);
    writeFileSync(join(tmp.dir, 'crl.pem'), crls.map((c) => c.pem).join(''));
    writeFileSync(
      join(tmp.dir, 'issuing.pem'),
      [...ca.authority.issuer('ec').chainPem.slice(0, 1), ...ca.authority.issuer('rsa').chainPem.slice(0, 1)].join(''),
    );
    for (const [name, record] of [
      ['lost', revoked.record],
      ['kept', kept.record],
      ['old', rsaRevoked.record],
    ] as const)
      writeFileSync(join(tmp.dir, `${name}.crt`), record.pem);
    const check = (file: string) =>
      openssl(['verify', '-crl_check', '-CRLfile', 'crl.pem', '-CAfile', join(ca.caDir, 'root.crt'), '-untrusted', 'issuing.pem', file], tmp.dir);
    const lost = await check('lost.crt');
    expect(lost.ok).toBe(false);
    expect(lost.stdout + lost.stderr).toMatch(/certificate revoked/);
    const old = await check('old.crt');
    expect(old.stdout + old.stderr).toMatch(/certificate revoked/);
    expect((await check('kept.crt')).stdout.trim()).toBe('kept.crt: OK');

    // openssl crl reads the first CRL of a file: look at each issuer's on its own.
    writeFileSync(join(tmp.dir, 'crl-ec.pem'), crls.find((c) => c.issuer === 'ec')!.pem);
    writeFileSync(join(tmp.dir, 'crl-rsa.pem'), crls.find((c) => c.issuer === 'rsa')!.pem);
    const text = await openssl(['crl', '-in', 'crl-ec.pem', '-noout', '-text'], tmp.dir);
    expect(text.stdout).toMatch(/Version 2 \(0x1\)/);
    expect(text.stdout).toMatch(/X509v3 CRL Number: \n\s+1\n/);
    expect(text.stdout).toMatch(/Key Compromise/);
    expect(text.stdout).toContain(`Serial Number: ${revoked.record.serial.toUpperCase()}`);
    expect(text.stdout).not.toContain(kept.record.serial.toUpperCase());
    expect(text.stdout).toMatch(/Issuer: O = Test Plant, CN = gw-test Issuing CA EC/);
    const rsaText = await openssl(['crl', '-in', 'crl-rsa.pem', '-noout', '-text'], tmp.dir);
    expect(rsaText.stdout).toMatch(/Cessation Of Operation/);
    expect(rsaText.stdout).toMatch(/Signature Algorithm: sha256WithRSAEncryption/);
    // Each regeneration takes the next CRL number.
    expect(ca.authority.crls(24).map((c) => c.crlNumber)).toEqual([2, 2]);
    ca.close();
  });

  it('gives 10,000 certificates 10,000 distinct positive serials of at least 64 bits', async () => {
    const ca = caFixture(tmp.dir);
    const serials: string[] = [];
    for (let batch = 0; batch < 100; batch++) {
      const issued = await Promise.all(
        Array.from({ length: 100 }, (_, i) => ca.authority.issue({ profile: 'mqtt-device', identity: `dev-${batch}-${i}`, csr: p256Csr() })),
      );
      serials.push(...issued.map((c) => c.record.serial));
    }
    expect(new Set(serials).size).toBe(10_000);
    expect(ca.count()).toBe(10_000);
    for (const s of serials) {
      const value = BigInt(`0x${s}`);
      expect(value > 0n).toBe(true);
      expect(value.toString(2).length).toBeGreaterThanOrEqual(64);
    }
    // The database enforces uniqueness too.
    const distinct = ca.store.db.prepare('SELECT count(DISTINCT serial) AS n FROM certificates').get() as { n: number };
    expect(distinct.n).toBe(10_000);
    ca.close();
  }, 120_000);
});
