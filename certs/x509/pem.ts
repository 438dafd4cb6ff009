import { CertError } from '../errors.js';

/** PEM armour around DER, 64 characters a line. */
export function toPem(label: string, der: Buffer): string {
  const b64 = der.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** Every PEM block in `text` with its label, in order. */
export function pemBlocks(text: string): { label: string; der: Buffer }[] {
  const out: { label: string; der: Buffer }[] = [];
  for (const m of text.matchAll(BLOCK)) {
    const body = m[2]!.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) throw new CertError('PEM_INVALID', `PEM block ${m[1]} is not valid base64`);
    out.push({ label: m[1]!, der: Buffer.from(body, 'base64') });
  }
  return out;
}

/**
 * DER from PEM text with one of `labels`, or the input itself when it is
 * already DER (starts with a SEQUENCE tag).
 */
export function derFrom(input: string | Buffer, labels: string[], what: string): Buffer {
  if (Buffer.isBuffer(input) && input[0] === 0x30) return input;
  const text = Buffer.isBuffer(input) ? input.toString('latin1') : input;
  const block = pemBlocks(text).find((b) => labels.includes(b.label));
  if (!block) throw new CertError('PEM_INVALID', `${what}: no PEM block labelled ${labels.join(' or ')} and not DER`);
  return block.der;
}
