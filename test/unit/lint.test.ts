import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CertError } from '../../certs/errors.js';
import type { IssuingCa } from '../../certs/issuer.js';
import { lintTbs } from '../../certs/lint.js';
import { profileNamed } from '../../certs/profiles/index.js';
import { encodeTbs, randomSerial } from '../../certs/x509/certificate.js';
import { basicConstraints, extKeyUsage, keyUsage, subjectAltName } from '../../certs/x509/extensions.js';
import { encodeName } from '../../certs/x509/name.js';
import { OID } from '../../certs/x509/oids.js';
import { caFixture } from '../helpers/caFixture.js';
import { tempDir } from '../helpers/daemon.js';

describe('lint of the encoded certificate before it is signed', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: ReturnType<typeof caFixture>;
  let issuer: IssuingCa;
  const spki = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'der' });
  beforeAll(() => {
    tmp = tempDir();
    ca = caFixture(tmp.dir);
    issuer = ca.authority.issuer('ec');
  });
  afterAll(() => {
    ca.close();
    tmp.cleanup();
  });

  const mqtt = profileNamed('mqtt-device');
  const template = mqtt.template({ identity: 'lint-1' }, 'ec-p256', 'Test Plant');
  const good = () => [basicConstraints(false), keyUsage(['digitalSignature']), extKeyUsage([OID.clientAuth]), issuer.aki];
  const tbs = (extensions: Buffer[], notAfter = new Date(Date.now() + 86_400_000), issuerName = issuer.subjectName) =>
    encodeTbs({
      serial: randomSerial(),
      signatureAlgorithm: issuer.signatureAlgorithm,
      issuerName,
      notBefore: new Date(Date.now() - 1000),
      notAfter,
      subjectName: encodeName(template.subject),
      spki,
      extensions,
    });
  const lint =
    (t: Buffer, notAfter = new Date(Date.now() + 86_400_000), profile = mqtt, tpl = template) =>
    () =>
      lintTbs(t, new Date(Date.now() - 1000), notAfter, profile, tpl, issuer);

  it('passes a certificate built as the profile says', () => {
    expect(lint(tbs(good()))).not.toThrow();
  });

  it.each([
    ['a leaf with CA:TRUE', () => lint(tbs([basicConstraints(true), ...good().slice(1)]))(), /CA:TRUE/],
    [
      'a leaf that may sign certificates',
      () => lint(tbs([basicConstraints(false), keyUsage(['digitalSignature', 'keyCertSign']), ...good().slice(2)]))(),
      /may sign certificates/,
    ],
    [
      'other key usages than the profile',
      () => lint(tbs([basicConstraints(false), keyUsage(['digitalSignature', 'keyEncipherment']), ...good().slice(2)]))(),
      /key usage/,
    ],
    [
      'another extended key usage',
      () => lint(tbs([basicConstraints(false), keyUsage(['digitalSignature']), extKeyUsage([OID.serverAuth]), issuer.aki]))(),
      /extended key usage/,
    ],
    [
      'validity past the issuer',
      () => {
        const end = new Date(issuer.notAfter.getTime() + 86_400_000);
        lint(tbs(good(), end), end)();
      },
      /not inside the issuer/,
    ],
    ['an issuer name that is not the CA subject', () => lint(tbs(good(), undefined, encodeName({ commonName: 'Someone Else' })))(), /issuer name/],
    [
      'a required SAN URI missing',
      () => {
        const opcua = profileNamed('opcua-application');
        const tpl = opcua.template({ identity: 'urn:a:b' }, 'rsa', 'Test Plant');
        const ext = [basicConstraints(false), keyUsage(tpl.keyUsage), extKeyUsage(tpl.extKeyUsage), subjectAltName({ dnsNames: ['x.local'] })];
        lint(tbs(ext), undefined, opcua, tpl)();
      },
      /SAN URI missing/,
    ],
  ] as [string, () => void, RegExp][])('refuses %s with LINT_FAILED', (_name, run, message) => {
    let err: unknown;
    try {
      run();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CertError);
    expect((err as CertError).code).toBe('LINT_FAILED');
    expect((err as Error).message).toMatch(message);
  });
});
