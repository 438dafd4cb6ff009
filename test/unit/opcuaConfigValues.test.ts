import { describe, expect, it } from 'vitest';
import type { JsonValue, OpcuaDataType } from '../../agent/configuration/types.js';
import { fromWire, sameValue, toWire, valueRefusal } from '../../agent/transport/opcuaConfigValues.js';

/** A profile's JSON values against OPC UA built-in types: what is refused, how 64-bit integers travel, how values compare. */
describe('OPC UA configuration values', () => {
  const cases: { type: OpcuaDataType; value: JsonValue; refusal?: RegExp }[] = [
    { type: 'Boolean', value: true },
    { type: 'Boolean', value: 1, refusal: /not a Boolean/ },
    { type: 'SByte', value: -128 },
    { type: 'SByte', value: 128, refusal: /outside SByte's range -128 to 127/ },
    { type: 'Byte', value: -1, refusal: /outside Byte's range/ },
    { type: 'Int16', value: 1.5, refusal: /not a whole number \(Int16\)/ },
    { type: 'UInt16', value: 65_535 },
    { type: 'Int32', value: '12', refusal: /not a whole number \(Int32\)/ },
    { type: 'UInt32', value: 4_294_967_296, refusal: /outside UInt32's range/ },
    { type: 'Int64', value: '-9223372036854775808' },
    { type: 'Int64', value: '9223372036854775808', refusal: /outside Int64's range/ },
    { type: 'Int64', value: 2 ** 53, refusal: /not a whole number \(or a decimal string\)/ },
    { type: 'UInt64', value: '18446744073709551615' },
    { type: 'UInt64', value: '-1', refusal: /outside UInt64's range/ },
    { type: 'UInt64', value: '1e3', refusal: /not a whole number/ },
    { type: 'Float', value: 3.5e38, refusal: /outside Float's range/ },
    { type: 'Float', value: 0.1 },
    { type: 'Double', value: 1e308 },
    { type: 'Double', value: null, refusal: /not a finite number/ },
    { type: 'String', value: 'x' },
    { type: 'String', value: { a: 1 }, refusal: /not a String/ },
  ];
  for (const c of cases) {
    it(`${c.type} ${JSON.stringify(c.value)}: ${c.refusal ? 'refused' : 'taken'}`, () => {
      const why = valueRefusal(c.type, c.value);
      if (c.refusal) expect(why).toMatch(c.refusal);
      else expect(why).toBeUndefined();
    });
  }

  it('sends 64-bit integers as [high, low] words and reads them back as decimal strings', () => {
    expect(toWire('Int64', '-1')).toEqual([0xffff_ffff, 0xffff_ffff]);
    expect(toWire('UInt64', 4_294_967_297)).toEqual([1, 1]);
    expect(fromWire('Int64', [0xffff_ffff, 0xffff_fffe])).toBe('-2');
    expect(fromWire('Int64', [0x8000_0000, 0])).toBe('-9223372036854775808');
    expect(fromWire('UInt64', [0xffff_ffff, 0xffff_ffff])).toBe('18446744073709551615');
  });

  it('compares Float after float32 rounding and 64-bit integers by value, whatever their JSON form', () => {
    expect(sameValue('Float', 0.1, Math.fround(0.1))).toBe(true);
    expect(sameValue('Double', 0.1, Math.fround(0.1))).toBe(false);
    expect(sameValue('Int64', 42, '42')).toBe(true);
    expect(sameValue('UInt64', '18446744073709551615', '18446744073709551614')).toBe(false);
    expect(sameValue('String', 'a', null)).toBe(false);
  });
});
