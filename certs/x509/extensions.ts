import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { CertError } from '../errors.js';
import {
  bitString,
  boolean,
  children,
  decodeOid,
  decodeUnsigned,
  expectTag,
  octetString,
  oid,
  read,
  sequence,
  smallInteger,
  Tag,
  tlv,
  type Node,
} from './der.js';
import { OID } from './oids.js';

export type KeyUsage = 'digitalSignature' | 'nonRepudiation' | 'keyEncipherment' | 'dataEncipherment' | 'keyAgreement' | 'keyCertSign' | 'cRLSign';

export const KEY_USAGE_BITS: readonly KeyUsage[] = [
  'digitalSignature',
  'nonRepudiation',
  'keyEncipherment',
  'dataEncipherment',
  'keyAgreement',
  'keyCertSign',
  'cRLSign',
];

export function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? sequence(oid(id), boolean(true), octetString(value)) : sequence(oid(id), octetString(value));
}

export function basicConstraints(ca: boolean, pathLen?: number): Buffer {
  const inner = ca ? sequence(boolean(true), ...(pathLen === undefined ? [] : [smallInteger(pathLen)])) : sequence();
  return extension(OID.basicConstraints, true, inner);
}

/** keyUsage as a DER named-bit BIT STRING (trailing zero bits dropped, as DER requires). */
export function keyUsage(usages: readonly KeyUsage[]): Buffer {
  let byte = 0;
  for (const u of usages) byte |= 0x80 >> KEY_USAGE_BITS.indexOf(u);
  if (byte === 0) throw new Error('keyUsage needs at least one usage');
  let unused = 0;
  while (((byte >> unused) & 1) === 0) unused++;
  return extension(OID.keyUsage, true, bitString(Buffer.from([byte]), unused));
}

export function extKeyUsage(oids: readonly string[]): Buffer {
  return extension(OID.extKeyUsage, false, sequence(...oids.map((o) => oid(o))));
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(keyBits: Buffer): Buffer {
  return createHash('sha1').update(keyBits).digest();
}

export const subjectKeyIdentifier = (id: Buffer): Buffer => extension(OID.subjectKeyIdentifier, false, octetString(id));
export const authorityKeyIdentifier = (id: Buffer): Buffer => extension(OID.authorityKeyIdentifier, false, sequence(tlv(0x80, id)));

export interface SubjectAltNames {
  uris?: string[];
  dnsNames?: string[];
  ipAddresses?: string[];
}

const DNS = /^(?=.{1,253}$)(\*\.)?([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const URI = /^[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x7e]+$/;

/** The text of an IP address as the certificate holds it: dotted IPv4, or eight full IPv6 groups. */
export function canonicalIp(ip: string): string {
  const bytes = ipBytes(ip);
  if (bytes.length === 4) return [...bytes].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return groups.join(':');
}

function ipBytes(ip: string): Buffer {
  if (ip.includes('%')) throw new CertError('REQUEST_INVALID', `IP address ${JSON.stringify(ip)} has a zone id, which a certificate cannot carry`);
  const kind = isIP(ip);
  if (kind === 4) return Buffer.from(ip.split('.').map(Number));
  if (kind === 6) {
    const [head, tail = ''] = ip.includes('::') ? ip.split('::') : [ip, undefined];
    const parse = (part: string) => (part ? part.split(':') : []).flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]);
    const h = parse(head!);
    const t = ip.includes('::') ? parse(tail) : [];
    if (ip.includes('.')) throw new CertError('REQUEST_INVALID', `IPv6 address ${ip} with an embedded IPv4 part is not accepted`);
    return Buffer.from([...h, ...new Array(16 - h.length - t.length).fill(0), ...t]);
  }
  throw new CertError('REQUEST_INVALID', `${JSON.stringify(ip)} is not an IP address`);
}

/** Validates every name (no control characters, well-formed) and encodes subjectAltName. */
export function subjectAltName(names: SubjectAltNames): Buffer {
  const general: Buffer[] = [];
  for (const uri of names.uris ?? []) {
    if (!URI.test(uri) || uri.length > 1024) throw new CertError('NAME_INVALID', `SAN URI ${JSON.stringify(uri)} is not a valid URI`);
    general.push(tlv(0x86, Buffer.from(uri, 'ascii')));
  }
  for (const dns of names.dnsNames ?? []) {
    if (!DNS.test(dns)) throw new CertError('NAME_INVALID', `SAN DNS name ${JSON.stringify(dns)} is not a valid host name`);
    general.push(tlv(0x82, Buffer.from(dns.toLowerCase(), 'ascii')));
  }
  for (const ip of names.ipAddresses ?? []) general.push(tlv(0x87, ipBytes(ip)));
  if (general.length === 0) throw new CertError('REQUEST_INVALID', 'subjectAltName needs at least one name');
  return extension(OID.subjectAltName, false, sequence(...general));
}

/** What the CA reads back from a certificate's extensions (for lint and for imported CAs). */
export interface ParsedExtensions {
  ca: boolean;
  pathLen?: number;
  keyUsage: KeyUsage[];
  extKeyUsage: string[];
  subjectKeyId?: Buffer;
  san: { uris: string[]; dnsNames: string[]; ipAddresses: string[] };
}

export function parseExtensions(extensionsNode: Node | undefined): ParsedExtensions {
  const out: ParsedExtensions = { ca: false, keyUsage: [], extKeyUsage: [], san: { uris: [], dnsNames: [], ipAddresses: [] } };
  if (!extensionsNode) return out;
  for (const ext of children(children(extensionsNode)[0]!)) {
    const parts = children(ext);
    const id = decodeOid(expectTag(parts[0], Tag.oid, 'extension id'));
    const value = read(expectTag(parts[parts.length - 1], Tag.octetString, 'extension value').value);
    if (id === OID.basicConstraints) {
      const [ca, pathLen] = children(value);
      out.ca = ca?.tag === Tag.boolean && ca.value[0] !== 0;
      if (pathLen) out.pathLen = decodeUnsigned(pathLen).reduce((v, b) => v * 256 + b, 0);
    } else if (id === OID.keyUsage) {
      const first = value.value[1] ?? 0;
      out.keyUsage = KEY_USAGE_BITS.filter((_, i) => (first & (0x80 >> i)) !== 0);
    } else if (id === OID.extKeyUsage) {
      out.extKeyUsage = children(value).map(decodeOid);
    } else if (id === OID.subjectKeyIdentifier) {
      out.subjectKeyId = Buffer.from(value.value);
    } else if (id === OID.subjectAltName) {
      for (const name of children(value)) {
        if (name.tag === 0x86) out.san.uris.push(name.value.toString('latin1'));
        else if (name.tag === 0x82) out.san.dnsNames.push(name.value.toString('latin1'));
        else if (name.tag === 0x87) out.san.ipAddresses.push(name.value.length === 4 ? [...name.value].join('.') : name.value.toString('hex'));
      }
    }
  }
  return out;
}
