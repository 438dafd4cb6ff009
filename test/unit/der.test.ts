import { describe, expect, it } from 'vitest';
import { CertError } from '../../certs/errors.js';
import {
  children,
  decodeOid,
  decodeUnsigned,
  DerError,
  oid,
  read,
  readExactly,
  sequence,
  setOf,
  smallInteger,
  Tag,
  time,
  unsignedInteger,
  utf8String,
} from '../../certs/x509/der.js';
import { keyUsage, subjectAltName } from '../../certs/x509/extensions.js';
import { encodeName } from '../../certs/x509/name.js';
import { derFrom, pemBlocks, toPem } from '../../certs/x509/pem.js';

const hex = (b: Buffer) => b.toString('hex');

describe('DER encoding', () => {
  it('encodes OIDs and reads them back', () => {
    expect(hex(oid('1.2.840.10045.2.1'))).toBe('06072a8648ce3d0201');
    expect(hex(oid('2.5.29.19'))).toBe('0603551d13');
    for (const id of ['1.2.840.113549.1.1.11', '0.9.2342.19200300.100.1.25', '2.999.3', '1.3.132.0.34']) {
      expect(decodeOid(read(oid(id)))).toBe(id);
    }
  });

  it('reads OIDs with arcs past 2^53 (UUID OIDs) and refuses subidentifiers not in minimal form', () => {
    const uuid = '2.25.329800735698586629295641978511506172918';
    expect(decodeOid(read(oid(uuid)))).toBe(uuid);
    expect(decodeOid(read(oid('2.999.9007199254740993')))).toBe('2.999.9007199254740993');
    expect(decodeOid(read(Buffer.from('0603883703', 'hex')))).toBe('2.999.3');
    // 2.5.4.3 with its second arc padded: 55 80 04 03.
    expect(() => decodeOid(read(Buffer.from('060455800403', 'hex')))).toThrow(/minimal form/);
    // The first subidentifier padded as well.
    expect(() => decodeOid(read(Buffer.from('060480550403', 'hex')))).toThrow(/minimal form/);
    expect(() => decodeOid(read(Buffer.from('06025581', 'hex')))).toThrow(/ends inside an arc/);
  });

  it('keeps INTEGERs positive and minimal', () => {
    expect(hex(unsignedInteger(Buffer.from([0x80, 0x01])))).toBe('0203008001');
    expect(hex(unsignedInteger(Buffer.from([0x00, 0x00, 0x7f])))).toBe('02017f');
    expect(hex(smallInteger(0))).toBe('020100');
    expect(hex(decodeUnsigned(read(unsignedInteger(Buffer.from([0xff, 0xee])))))).toBe('ffee');
    expect(() => decodeUnsigned(read(Buffer.from([0x02, 0x01, 0x80])))).toThrow(/negative/);
  });

  it('writes UTCTime through 2049 and GeneralizedTime from 2050 (RFC 5280)', () => {
    expect(time(new Date('2049-12-31T23:59:59Z')).toString('latin1', 2)).toBe('491231235959Z');
    expect(time(new Date('2049-12-31T23:59:59Z'))[0]).toBe(Tag.utcTime);
    expect(time(new Date('2050-01-01T00:00:00Z')).toString('latin1', 2)).toBe('20500101000000Z');
    expect(time(new Date('2050-01-01T00:00:00Z'))[0]).toBe(Tag.generalizedTime);
  });

  it('uses long-form lengths past 127 bytes and sorts SET OF', () => {
    const long = utf8String('x'.repeat(200));
    expect(hex(long.subarray(0, 3))).toBe('0c81c8');
    expect(read(long).value.length).toBe(200);
    const set = setOf(smallInteger(5), smallInteger(1));
    expect(children(read(set)).map((c) => c.value[0])).toEqual([1, 5]);
  });

  it('rejects truncated, indefinite, non-minimal and trailing encodings', () => {
    expect(() => read(Buffer.from([0x30]))).toThrow(DerError);
    expect(() => read(Buffer.from([0x30, 0x05, 0x01]))).toThrow(/runs past the end/);
    expect(() => read(Buffer.from([0x30, 0x80, 0x00, 0x00]))).toThrow(/indefinite/);
    expect(() => read(Buffer.from([0x04, 0x81, 0x05, 1, 2, 3, 4, 5]))).toThrow(/minimal/);
    expect(() => readExactly(Buffer.concat([sequence(), Buffer.from([0])]), Tag.sequence, 'x')).toThrow(/trailing/);
  });
});

describe('names and extensions', () => {
  it('refuses control characters and over-long values before encoding', () => {
    expect(() => encodeName({ commonName: 'a\u0000b' })).toThrow(CertError);
    expect(() => encodeName({ commonName: 'tab\there' })).toThrow(/control or NUL/);
    expect(() => encodeName({ commonName: 'x'.repeat(65) })).toThrow(/1 to 64/);
    expect(() => encodeName({ country: 'D€' })).toThrow(/PrintableString/);
  });

  it('encodes keyUsage as a minimal named-bit string', () => {
    // digitalSignature only: one byte 0x80 with 7 unused bits.
    expect(hex(keyUsage(['digitalSignature']).subarray(-4))).toBe('03020780');
    // keyCertSign + cRLSign: 0x06, 1 unused bit.
    expect(hex(keyUsage(['keyCertSign', 'cRLSign']).subarray(-4))).toBe('03020106');
  });

  it('encodes IPv4 and IPv6 SANs as 4 and 16 bytes, and refuses bad names', () => {
    const der = subjectAltName({ ipAddresses: ['10.1.2.3', 'fe80::1'] });
    expect(hex(der)).toContain('87040a010203');
    expect(hex(der)).toContain(`8710fe80${'00'.repeat(13)}01`);
    expect(() => subjectAltName({ ipAddresses: ['10.1.2'] })).toThrow(/not an IP address/);
    expect(() => subjectAltName({ ipAddresses: ['fe80::1%eth0'] })).toThrow(/zone id/);
    expect(() => subjectAltName({ dnsNames: ['bad name.local'] })).toThrow(/not a valid host name/);
    expect(() => subjectAltName({ uris: ['no-scheme'] })).toThrow(/not a valid URI/);
    expect(() => subjectAltName({})).toThrow(/at least one name/);
  });
});

describe('PEM', () => {
  it('round-trips, finds blocks by label, and passes DER through', () => {
    const der = sequence(smallInteger(7));
    const pem = toPem('CERTIFICATE REQUEST', der);
    expect(pem.split('\n')[0]).toBe('-----BEGIN CERTIFICATE REQUEST-----');
    expect(pemBlocks(`junk\n${pem}more junk`)).toEqual([{ label: 'CERTIFICATE REQUEST', der }]);
    expect(derFrom(pem, ['CERTIFICATE REQUEST'], 'x')).toEqual(der);
    expect(derFrom(der, ['CERTIFICATE REQUEST'], 'x')).toBe(der);
    expect(() => derFrom(pem, ['CERTIFICATE'], 'x')).toThrow(CertError);
    expect(() => pemBlocks('-----BEGIN X-----\n!!!\n-----END X-----')).toThrow(/not valid base64/);
  });
});
