/**
 * Minimal DER (ITU-T X.690) encoding and reading: just what X.509
 * certificates, CSRs and CRLs need. Encoders return Buffers that callers
 * concatenate; constant parts are encoded once and cached by the caller.
 */

export const Tag = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  utf8String: 0x0c,
  printableString: 0x13,
  ia5String: 0x16,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

function lengthBytes(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One TLV. `content` may be several buffers, concatenated without an extra copy per part. */
export function tlv(tag: number, ...content: Buffer[]): Buffer {
  const size = content.reduce((n, b) => n + b.length, 0);
  const length = lengthBytes(size);
  return Buffer.concat([Buffer.from([tag]), length, ...content], 1 + length.length + size);
}

export const sequence = (...items: Buffer[]): Buffer => tlv(Tag.sequence, ...items);

/** SET OF: DER requires the encodings in ascending order. */
export const setOf = (...items: Buffer[]): Buffer => tlv(Tag.set, ...[...items].sort(Buffer.compare));

/** [n] EXPLICIT: a constructed context tag around one encoding. */
export const explicit = (n: number, inner: Buffer): Buffer => tlv(0xa0 | n, inner);

export const nullValue = Buffer.from([Tag.null, 0x00]);

export const boolean = (value: boolean): Buffer => Buffer.from([Tag.boolean, 0x01, value ? 0xff : 0x00]);

/** A non-negative INTEGER from big-endian magnitude bytes (a leading 0x00 is added when the top bit is set). */
export function unsignedInteger(magnitude: Buffer): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  return (trimmed[0]! & 0x80) !== 0 ? tlv(Tag.integer, Buffer.from([0]), trimmed) : tlv(Tag.integer, trimmed);
}

export function smallInteger(value: number): Buffer {
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`smallInteger takes a non-negative integer, got ${value}`);
  const bytes: number[] = [];
  for (let n = value; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return unsignedInteger(Buffer.from(bytes.length ? bytes : [0]));
}

const oidCache = new Map<string, Buffer>();

/** The base-128 subidentifier of one arc, most significant group first, minimal (no leading 0x80). */
function subidentifier(arc: bigint): number[] {
  const chunk: number[] = [Number(arc & 0x7fn)];
  for (let n = arc >> 7n; n > 0n; n >>= 7n) chunk.unshift(Number(n & 0x7fn) | 0x80);
  return chunk;
}

/** An OBJECT IDENTIFIER from dotted decimal; arcs of any size (2.25.<UUID> has a 128-bit one). */
export function oid(dotted: string): Buffer {
  const cached = oidCache.get(dotted);
  if (cached) return cached;
  const parts = dotted.split('.');
  if (parts.length < 2 || parts.some((a) => !/^(0|[1-9][0-9]*)$/.test(a))) throw new Error(`bad OID ${dotted}`);
  const arcs = parts.map(BigInt);
  if (arcs[0]! > 2n || (arcs[0]! < 2n && arcs[1]! >= 40n))
    throw new Error(`bad OID ${dotted}: the first arc is 0, 1 or 2, and the second below 40 under 0 and 1`);
  const body = [...subidentifier(arcs[0]! * 40n + arcs[1]!), ...arcs.slice(2).flatMap(subidentifier)];
  const encoded = tlv(Tag.oid, Buffer.from(body));
  oidCache.set(dotted, encoded);
  return encoded;
}

export const bitString = (bytes: Buffer, unusedBits = 0): Buffer => tlv(Tag.bitString, Buffer.from([unusedBits]), bytes);
export const octetString = (bytes: Buffer): Buffer => tlv(Tag.octetString, bytes);
export const utf8String = (text: string): Buffer => tlv(Tag.utf8String, Buffer.from(text, 'utf8'));
export const printableString = (text: string): Buffer => tlv(Tag.printableString, Buffer.from(text, 'latin1'));

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; always Z, whole seconds. */
export function time(date: Date): Buffer {
  const y = date.getUTCFullYear();
  const rest = `${pad(date.getUTCMonth() + 1)}${pad(date.getUTCDate())}${pad(date.getUTCHours())}${pad(date.getUTCMinutes())}${pad(date.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(Tag.utcTime, Buffer.from(`${pad(y % 100)}${rest}`, 'ascii'));
  return tlv(Tag.generalizedTime, Buffer.from(`${pad(y, 4)}${rest}`, 'ascii'));
}

/** A decoded TLV: its tag, where its content sits in `source`, and the whole encoding. */
export interface Node {
  tag: number;
  /** The content bytes (a view into the source). */
  value: Buffer;
  /** Tag, length and content (a view into the source). */
  raw: Buffer;
}

export class DerError extends Error {}

/** Reads one TLV at `offset`; throws DerError on anything malformed or not minimal-length. */
export function read(source: Buffer, offset = 0): Node & { end: number } {
  if (offset + 2 > source.length) throw new DerError('truncated: no room for a tag and a length');
  const tag = source[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError('multi-byte tags are not used in these structures');
  let length = source[offset + 1]!;
  let header = 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw new DerError('indefinite or oversized length');
    if (offset + 2 + count > source.length) throw new DerError('truncated length');
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + source[offset + 2 + i]!;
    if (length < 0x80 || source[offset + 2] === 0) throw new DerError('length not in minimal form');
    header += count;
  }
  const end = offset + header + length;
  if (end > source.length) throw new DerError('truncated: content runs past the end');
  return { tag, value: source.subarray(offset + header, end), raw: source.subarray(offset, end), end };
}

/** The children of a constructed node. */
export function children(node: Node): Node[] {
  const out: Node[] = [];
  for (let offset = 0; offset < node.value.length; ) {
    const child = read(node.value, offset);
    out.push(child);
    offset = child.end;
  }
  return out;
}

/** Reads a whole buffer as exactly one TLV with the expected tag. */
export function readExactly(source: Buffer, tag: number, what: string): Node {
  const node = read(source, 0);
  if (node.end !== source.length) throw new DerError(`${what}: trailing bytes after the structure`);
  if (node.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${node.tag.toString(16)}`);
  return node;
}

export function expectTag(node: Node | undefined, tag: number, what: string): Node {
  if (!node) throw new DerError(`${what}: missing`);
  if (node.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${node.tag.toString(16)}`);
  return node;
}

/** The value of one subidentifier (bytes[start..end), base 128). */
function arcValue(bytes: Buffer, start: number, end: number): number | bigint {
  // Up to 7 groups (49 bits) a number is exact; beyond, BigInt from the bits (linear, unlike repeated multiplication).
  if (end - start <= 7) {
    let n = 0;
    for (let i = start; i < end; i++) n = n * 128 + (bytes[i]! & 0x7f);
    return n;
  }
  let bits = '';
  for (let i = start; i < end; i++) bits += (bytes[i]! & 0x7f).toString(2).padStart(7, '0');
  return BigInt(`0b${bits}`);
}

/**
 * An OBJECT IDENTIFIER as dotted decimal. Strict DER (X.690 8.19.2): every
 * subidentifier in its minimal form (none starts with 0x80), none cut
 * short. Arcs may be of any size: UUID OIDs (2.25.<128 bits>) are legal.
 */
export function decodeOid(node: Node): string {
  const bytes = node.value;
  if (bytes.length === 0) throw new DerError('empty OID');
  if ((bytes[bytes.length - 1]! & 0x80) !== 0) throw new DerError('OID ends inside an arc');
  let text = '';
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (i === start && bytes[i] === 0x80) throw new DerError('OID arc not in minimal form (a subidentifier starts with 0x80)');
    if ((bytes[i]! & 0x80) !== 0) continue;
    const value = arcValue(bytes, start, i + 1);
    if (start === 0) {
      // The first subidentifier is 40 * first arc + second arc; the first arc is 0, 1 or 2.
      const first = value < 40 ? 0 : value < 80 ? 1 : 2;
      text = typeof value === 'number' ? `${first}.${value - first * 40}` : `${first}.${value - BigInt(first * 40)}`;
    } else text += `.${value}`;
    start = i + 1;
  }
  return text;
}

/** The magnitude of a non-negative INTEGER (leading zero bytes removed); throws on a negative one. */
export function decodeUnsigned(node: Node): Buffer {
  if (node.tag !== Tag.integer || node.value.length === 0) throw new DerError('not an INTEGER');
  if (node.value[0]! & 0x80) throw new DerError('negative INTEGER');
  let start = 0;
  while (start < node.value.length - 1 && node.value[start] === 0) start++;
  return node.value.subarray(start);
}
