import { isIPv4 } from 'node:net';
import { decode, type Answer, type Packet } from 'dns-packet';
import multicastDns from 'multicast-dns';
import type { Logger } from '../log.js';

/** The DNS-SD service type of OPC UA servers (OPC 10000-12 4.3.4, LDS-ME). */
export const OPCUA_SERVICE = '_opcua-tcp._tcp.local';
/** At most this many announced servers are taken from one browse. */
const MAX_ANNOUNCEMENTS = 1_000;

export interface OpcuaAnnouncement {
  /** The DNS-SD instance name (the server's mDNS name). */
  instance: string;
  /** The SRV target. */
  host: string;
  port: number;
  /** TXT `path=`, `/` when absent. */
  path: string;
  /** TXT `caps=`: server capabilities (LDS, DA, …). */
  caps: string[];
  /** IPv4 addresses of `host` from A records in the same answers, or `host` itself when it is an address. */
  addresses: string[];
}

const text = (data: unknown): string => (Buffer.isBuffer(data) ? data.toString('utf8') : typeof data === 'string' ? data : '');
const lower = (name: string) => name.toLowerCase().replace(/\.$/, '');

/**
 * The OPC UA servers announced in a set of DNS records (answers and
 * additionals of any number of mDNS responses): PTR of _opcua-tcp._tcp.local
 * to an instance, the instance's SRV (host, port) and TXT (path, caps), and
 * the host's A records. Malformed or incomplete records are left out.
 */
export function opcuaAnnouncements(records: readonly Answer[]): OpcuaAnnouncement[] {
  // Indexed once: a hostile host on the link may answer with thousands of records.
  const index = new Map<string, Answer[]>();
  for (const r of records) {
    if (typeof r.name !== 'string' || typeof r.type !== 'string') continue;
    const key = `${r.type} ${lower(r.name)}`;
    index.set(key, [...(index.get(key) ?? []), r]);
  }
  const byName = (type: string, name: string) => index.get(`${type} ${lower(name)}`) ?? [];
  const instances = [
    ...new Set(
      byName('PTR', OPCUA_SERVICE)
        .map((r) => text(r.data))
        .filter((n) => n !== ''),
    ),
  ].slice(0, MAX_ANNOUNCEMENTS);
  const out: OpcuaAnnouncement[] = [];
  for (const instance of instances) {
    const srv = byName('SRV', instance)[0]?.data as { port?: unknown; target?: unknown } | undefined;
    if (!srv || typeof srv.port !== 'number' || srv.port < 1 || srv.port > 65_535 || typeof srv.target !== 'string' || srv.target === '') continue;
    const txt = byName('TXT', instance).flatMap((r) => (Array.isArray(r.data) ? r.data : [r.data]).map(text));
    const field = (key: string) => txt.find((t) => t.toLowerCase().startsWith(`${key}=`))?.slice(key.length + 1);
    const path = field('path') ?? '/';
    const host = srv.target.replace(/\.$/, '');
    const addresses = isIPv4(host)
      ? [host]
      : [
          ...new Set(
            byName('A', host)
              .map((r) => text(r.data))
              .filter((a) => isIPv4(a)),
          ),
        ];
    out.push({
      instance: instance.replace(/[\u0000-\u001f\u007f]/g, '?').slice(0, 256),
      host: host.slice(0, 256),
      port: srv.port,
      path: /^\/[\x21-\x7e]*$/.test(path) ? path : '/',
      caps: (field('caps') ?? '')
        .split(',')
        .map((c) => c.trim())
        .filter((c) => /^[A-Za-z0-9]{1,16}$/.test(c)),
      addresses,
    });
  }
  return out;
}

/** The records of one raw mDNS message (as recorded off the wire). */
export function recordsOf(message: Buffer): Answer[] {
  const packet: Packet = decode(message);
  return packet.type === 'response' ? [...(packet.answers ?? []), ...(packet.additionals ?? [])] : [];
}

/** opc.tcp URLs for an announcement: one per address (a host without an A record is left out: resolving it needs mDNS too). */
export function announcementUrls(a: OpcuaAnnouncement): string[] {
  const path = a.path === '/' ? '' : a.path;
  return a.addresses.map((address) => `opc.tcp://${address}:${a.port}${path}`);
}

/**
 * Asks the local link for OPC UA servers (a PTR query for
 * _opcua-tcp._tcp.local, sent again halfway: multicast is lossy) and
 * collects what answers for `listenMs`. `iface` is the IPv4 address of the
 * interface to use; empty, the system's choice.
 */
export async function browseOpcua(o: { iface: string; listenMs: number; log: Logger }): Promise<OpcuaAnnouncement[]> {
  const mdns = multicastDns({ ...(o.iface ? { interface: o.iface } : {}), loopback: true, reuseAddr: true });
  const records: Answer[] = [];
  mdns.on('response', (packet) => {
    if (records.length < MAX_ANNOUNCEMENTS * 8) records.push(...(packet.answers ?? []), ...(packet.additionals ?? []));
  });
  mdns.on('warning', (err) => o.log.debug({ err: err.message }, 'mDNS warning'));
  try {
    await new Promise<void>((resolve, reject) => {
      mdns.on('error', reject);
      mdns.on('ready', () => resolve());
    });
    const ask = () => mdns.query([{ name: OPCUA_SERVICE, type: 'PTR' }], (err) => err && o.log.warn({ err: err.message }, 'mDNS query not sent'));
    ask();
    await new Promise((r) => setTimeout(r, o.listenMs / 2));
    ask();
    await new Promise((r) => setTimeout(r, o.listenMs / 2));
  } finally {
    await new Promise<void>((r) => mdns.destroy(() => r()));
  }
  return opcuaAnnouncements(records);
}
