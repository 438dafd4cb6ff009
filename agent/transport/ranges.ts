import { isIPv4 } from 'node:net';
import { AddressRangeError } from '../errors.js';

/** An IPv4 range: first address and prefix length. */
export interface Range {
  text: string;
  base: number;
  prefix: number;
}

const toInt = (ip: string): number => ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
const toIp = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

export function parseRange(text: string): Range {
  const [ip, bits] = text.split('/');
  if (!ip || !isIPv4(ip)) throw new AddressRangeError(`${JSON.stringify(text)} is not an IPv4 address or range`);
  if (bits !== undefined && !/^\d{1,2}$/.test(bits)) throw new AddressRangeError(`${JSON.stringify(text)} has a prefix length outside 0 to 32`);
  const prefix = bits === undefined ? 32 : Number(bits);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) throw new AddressRangeError(`${JSON.stringify(text)} has a prefix length outside 0 to 32`);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { text, base: (toInt(ip) & mask) >>> 0, prefix };
}

export function size(range: Range): number {
  return 2 ** (32 - range.prefix);
}

export function contains(ranges: readonly Range[], ip: string): boolean {
  if (!isIPv4(ip)) return false;
  const n = toInt(ip);
  return ranges.some((r) => n >>> 0 >= r.base && n >>> 0 < r.base + size(r));
}

/**
 * Every address of the ranges, without duplicates; the network and
 * broadcast addresses of ranges larger than /31 are left out. Refuses more
 * than `max` addresses before making the list.
 */
export function addresses(ranges: readonly Range[], max: number): string[] {
  const total = ranges.reduce((n, r) => n + size(r), 0);
  if (total > max) throw new AddressRangeError(`the scan ranges hold ${total} addresses, more than opcua.scan.maxAddresses (${max})`);
  const seen = new Set<number>();
  for (const r of ranges) {
    const n = size(r);
    for (let i = 0; i < n; i++) {
      if (n > 2 && (i === 0 || i === n - 1)) continue;
      seen.add(r.base + i);
    }
  }
  return [...seen].sort((a, b) => a - b).map(toIp);
}

/** The only form of URL target taken: opc.tcp://, a dotted IPv4 address, a port, an optional plain path. */
const URL_TARGET = /^opc\.tcp:\/\/(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})(\/[A-Za-z0-9._~/-]*)?$/;

/**
 * Why a technician's discovery target is refused, or undefined when it may
 * be used: a configured endpoint; an opc.tcp://IPv4:port URL (nothing else:
 * no user part, no host name, whose meaning could differ between URL
 * parsers or change after the check) whose address lies inside `allowed`
 * and whose port is one of `ports`; or a range wholly inside `allowed`
 * (scanned on `ports`). Targets narrow a run; they never widen it.
 */
export function targetRefusal(target: string, allowed: readonly Range[], endpoints: readonly string[], ports: readonly number[]): string | undefined {
  if (endpoints.includes(target)) return undefined;
  const ranges = `opcua.scan.ranges (${allowed.map((r) => r.text).join(', ') || 'none configured'})`;
  if (target.startsWith('opc.tcp:')) {
    const m = URL_TARGET.exec(target);
    if (!m || !isIPv4(m[1]!))
      return `${JSON.stringify(target.slice(0, 100))}: give opc.tcp://<IPv4 address>:<port> (or a configured endpoint), without a host name or user part`;
    if (!contains(allowed, m[1]!)) return `${target} is outside ${ranges}`;
    if (!ports.includes(Number(m[2]))) return `${target}: port ${m[2]} is not one of opcua.scan.ports (${ports.join(', ')})`;
    return undefined;
  }
  let range: Range;
  try {
    range = parseRange(target);
  } catch (err) {
    return `${(err as Error).message}; a target is an opc.tcp:// URL or an IPv4 range such as 10.1.2.0/24`;
  }
  const last = toIp(range.base + size(range) - 1);
  const inside = allowed.some((r) => contains([r], toIp(range.base)) && contains([r], last));
  return inside ? undefined : `${target} is not inside ${ranges}`;
}
