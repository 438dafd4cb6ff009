import { describe, expect, it } from 'vitest';
import { BerWriter } from 'ldapts';
import { filterOf, refusalOf } from '../../agent/transport/ldap.js';
import { escapeFilterValue, guidFilter, parseGuidHex } from '../../agent/transport/ldapFilter.js';

describe('escapeFilterValue (RFC 4515)', () => {
  const cases: [string, string, string][] = [
    ['a star, which would match any value', '*', '\\2a'],
    ['parentheses, which would close the filter and open another', ')(', '\\29\\28'],
    ['a backslash followed by 00, which would read as an escaped NUL', '\\00', '\\5c00'],
    ['a NUL, which ends a C string in some servers', 'a\u0000b', 'a\\00b'],
    ['a prefix search', 'admin*', 'admin\\2a'],
    ['an injected memberOf clause', '*)(memberOf=*', '\\2a\\29\\28memberOf=\\2a'],
    ['a name that closes the filter', 'tech1)(', 'tech1\\29\\28'],
    ['a Cyrillic а in a Latin-looking name, as its UTF-8 bytes', 'аdmin', '\\d0\\b0dmin'],
    ['a character outside the BMP, each UTF-8 byte', '😀', '\\f0\\9f\\98\\80'],
    ['control characters and DEL', '\n\u007f', '\\0a\\7f'],
    ['plain names and UPNs, unchanged', 'anna.berg@plant.test', 'anna.berg@plant.test'],
  ];
  it.each(cases)('escapes %s', (_what, input, escaped) => {
    expect(escapeFilterValue(input)).toBe(escaped);
  });

  it('leaves no filter metacharacter unescaped for any byte', () => {
    for (let code = 0; code < 0x800; code++) {
      const out = escapeFilterValue(String.fromCharCode(code));
      expect(out.replace(/\\[0-9a-f]{2}/g, ''), `U+${code.toString(16)}`).not.toMatch(/[*()\\\u0000]|[^\u0020-\u007e]/);
    }
  });
});

describe('GUID filters', () => {
  it('writes each of the 16 bytes escaped, in order', () => {
    expect(guidFilter('cf221916af444174908 9b3de8c06f376'.replace(' ', ''))).toBe(
      '(objectGUID=\\cf\\22\\19\\16\\af\\44\\41\\74\\90\\89\\b3\\de\\8c\\06\\f3\\76)',
    );
  });
  it.each([
    ['too short', 'cf2219'],
    ['not hex', 'zz221916af4441749089b3de8c06f376'],
    ['a filter', '*)(objectGUID=*'],
    ['a GUID in its dashed text form', 'cf221916-af44-4174-9089-b3de8c06f376'],
  ])('refuses a GUID that is %s', (_what, input) => {
    expect(guidFilter(input)).toBeUndefined();
    expect(parseGuidHex(input)).toBeUndefined();
  });
});

describe("AD's bind diagnostics", () => {
  it.each([
    ['52e', 'bad-credentials'],
    ['525', 'no-such-user'],
    ['530', 'disabled'],
    ['531', 'disabled'],
    ['533', 'disabled'],
    ['701', 'expired'],
    ['532', 'password-expired'],
    ['773', 'password-expired'],
    ['775', 'locked'],
    ['999', 'bad-credentials'],
  ])('data %s is %s', (data, refusal) => {
    expect(refusalOf(`80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data ${data}, v1db1`)).toBe(refusal);
  });
  it('a diagnostic without data is bad-credentials', () => {
    expect(refusalOf('Invalid credentials')).toBe('bad-credentials');
  });
});

describe('filterOf: the bytes that reach the directory', () => {
  const wire = (filter: string) => {
    const writer = new BerWriter();
    filterOf(filter).write(writer);
    return writer.buffer;
  };
  it('sends an escaped non-ASCII name as its UTF-8 bytes, once (ldapts alone would encode them twice)', () => {
    expect(wire(`(sAMAccountName=${escapeFilterValue('jörg')})`).includes(Buffer.from('jörg', 'utf8'))).toBe(true);
    expect(wire('(sAMAccountName=jörg)').includes(Buffer.from('jörg', 'utf8'))).toBe(true);
  });
  it('sends a GUID as its 16 raw bytes', () => {
    const hex = 'cf221916af4441749089b3de8c06f376';
    expect(wire(guidFilter(hex) as string).includes(Buffer.from(hex, 'hex'))).toBe(true);
  });
  it('sends a DN in an in-chain match as UTF-8 text', () => {
    const dn = 'CN=Prüfer,CN=Users,DC=plant,DC=test';
    expect(wire(`(memberOf:1.2.840.113556.1.4.1941:=${escapeFilterValue(dn)})`).includes(Buffer.from(dn, 'utf8'))).toBe(true);
  });
});
