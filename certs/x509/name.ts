import { CertError } from '../errors.js';
import { children, decodeOid, oid, printableString, sequence, setOf, Tag, utf8String, type Node } from './der.js';
import { OID } from './oids.js';

/** The name attributes the CA writes, in RDN order. */
export interface NameAttributes {
  country?: string;
  organization?: string;
  organizationalUnit?: string;
  commonName?: string;
  serialNumber?: string;
}

const ORDER: [keyof NameAttributes, string, 'utf8' | 'printable'][] = [
  ['country', OID.country, 'printable'],
  ['organization', OID.organization, 'utf8'],
  ['organizationalUnit', OID.organizationalUnit, 'utf8'],
  ['commonName', OID.commonName, 'utf8'],
  ['serialNumber', OID.serialNumber, 'printable'],
];

const SHORT: Record<string, string> = {
  [OID.commonName]: 'CN',
  [OID.organization]: 'O',
  [OID.organizationalUnit]: 'OU',
  [OID.country]: 'C',
  [OID.serialNumber]: 'serialNumber',
  [OID.locality]: 'L',
  [OID.state]: 'ST',
  [OID.domainComponent]: 'DC',
};

/** C0 and C1 control characters and NUL: never allowed in a name the CA writes or accepts. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

export function assertCleanText(value: string, what: string): void {
  if (CONTROL.test(value)) {
    throw new CertError('NAME_INVALID', `${what} contains a control or NUL character`, { details: { what } });
  }
  if (value.length === 0 || value.length > 64) {
    throw new CertError('NAME_INVALID', `${what} must be 1 to 64 characters long`, { details: { what } });
  }
}

/** DER of an X.501 Name. Every value is checked for control characters first. */
export function encodeName(attrs: NameAttributes): Buffer {
  const rdns: Buffer[] = [];
  for (const [key, id, kind] of ORDER) {
    const value = attrs[key];
    if (value === undefined) continue;
    assertCleanText(value, `name attribute ${key}`);
    if (kind === 'printable' && !/^[A-Za-z0-9 '()+,\-./:=?]+$/.test(value)) {
      throw new CertError('NAME_INVALID', `name attribute ${key} has characters a PrintableString cannot hold`);
    }
    rdns.push(setOf(sequence(oid(id), kind === 'printable' ? printableString(value) : utf8String(value))));
  }
  return sequence(...rdns);
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

const STRING_TAGS = new Set<number>([Tag.utf8String, Tag.printableString, Tag.ia5String, 0x14 /* T61 */, 0x1e /* BMP */]);

/**
 * Reads a Name into "CN=x, O=y" form and checks every value for control or
 * NUL characters (which can truncate names in C-based validators).
 */
export function decodeName(node: Node, what: string): { text: string; attributes: { type: string; value: string }[] } {
  const attributes: { type: string; value: string }[] = [];
  for (const rdn of children(node)) {
    if (rdn.tag !== Tag.set) throw new CertError('CSR_MALFORMED', `${what}: a name component is not a SET`);
    const atvs = children(rdn);
    if (atvs.length === 0) throw new CertError('CSR_MALFORMED', `${what}: an empty name component`);
    for (let i = 1; i < atvs.length; i++) {
      if (Buffer.compare(atvs[i - 1]!.raw, atvs[i]!.raw) > 0)
        throw new CertError('CSR_MALFORMED', `${what}: a multi-valued name component is not in DER order`);
    }
    for (const atv of atvs) {
      const pair = atv.tag === Tag.sequence ? children(atv) : [];
      if (pair.length !== 2 || pair[0]!.tag !== Tag.oid) throw new CertError('CSR_MALFORMED', `${what}: malformed name attribute`);
      const [typeNode, valueNode] = pair as [Node, Node];
      const type = SHORT[decodeOid(typeNode)] ?? decodeOid(typeNode);
      if (!STRING_TAGS.has(valueNode.tag)) throw new CertError('NAME_INVALID', `${what}: ${type} is not a string`);
      if (valueNode.tag === 0x1e && valueNode.value.length % 2 !== 0) throw new CertError('NAME_INVALID', `${what}: ${type} is a BMPString of odd length`);
      let value: string;
      try {
        value =
          valueNode.tag === 0x1e
            ? Buffer.from(valueNode.value).swap16().toString('utf16le')
            : valueNode.tag === Tag.utf8String
              ? UTF8.decode(valueNode.value)
              : valueNode.value.toString('latin1');
      } catch {
        throw new CertError('NAME_INVALID', `${what}: ${type} is not valid UTF-8`);
      }
      if (CONTROL.test(value)) {
        throw new CertError('NAME_INVALID', `${what}: ${type} contains a control or NUL character`, { details: { attribute: type } });
      }
      attributes.push({ type, value });
    }
  }
  return { text: attributes.map((a) => `${a.type}=${a.value}`).join(', '), attributes };
}
