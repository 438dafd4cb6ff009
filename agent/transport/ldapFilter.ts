/**
 * Values inside LDAP search filters (RFC 4515). A login name reaches a
 * filter from a client; escaping it is what keeps `*)(memberOf=*` a name
 * that matches nobody instead of a filter that matches everybody.
 */

const HEX = (byte: number) => `\\${byte.toString(16).padStart(2, '0')}`;

/**
 * `value` as an RFC 4515 assertion value: `*`, `(`, `)`, `\` and NUL as
 * \2a \28 \29 \5c \00, and every byte of the UTF-8 encoding that is not
 * printable ASCII (controls, DEL, each byte of a non-ASCII character) as
 * \xx too, so that a look-alike such as a Cyrillic "а" travels as the bytes
 * it is (\d0\b0) and no filter parser on the way can read it otherwise.
 */
export function escapeFilterValue(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const printable = byte >= 0x20 && byte < 0x7f;
    out += printable && byte !== 0x2a && byte !== 0x28 && byte !== 0x29 && byte !== 0x5c ? String.fromCharCode(byte) : HEX(byte);
  }
  return out;
}

/** An objectGUID as 32 hex digits (the agent's form: the bytes as AD sends them, in order), or undefined when it is not one. */
export function parseGuidHex(hex: string): Buffer | undefined {
  return /^[0-9a-fA-F]{32}$/.test(hex) ? Buffer.from(hex, 'hex') : undefined;
}

/**
 * `(objectGUID=\xx...)`: the 16 bytes of a GUID in the agent's hex form,
 * every byte escaped (objectGUID is binary: its bytes are matched as they are).
 * Undefined for a string that is not 32 hex digits.
 */
export function guidFilter(hex: string): string | undefined {
  const bytes = parseGuidHex(hex);
  if (!bytes) return undefined;
  return `(objectGUID=${[...bytes].map(HEX).join('')})`;
}
