// Types for the parts of multicast-dns 7 and dns-packet 5 the agent uses (neither ships its own).
declare module 'dns-packet' {
  export interface Answer {
    name: string;
    type: string;
    ttl?: number;
    data?: unknown;
  }
  export interface Packet {
    type?: 'query' | 'response';
    id?: number;
    flags?: number;
    questions?: { name: string; type: string }[];
    answers?: Answer[];
    additionals?: Answer[];
    authorities?: Answer[];
  }
  export function decode(buf: Buffer): Packet;
  export function encode(packet: Packet): Buffer;
}

declare module 'multicast-dns' {
  import type { Packet } from 'dns-packet';
  import type { RemoteInfo } from 'node:dgram';
  interface Options {
    interface?: string;
    port?: number;
    ip?: string;
    ttl?: number;
    loopback?: boolean;
    reuseAddr?: boolean;
    multicast?: boolean;
    bind?: string | false;
  }
  interface MulticastDns {
    on(event: 'response' | 'query' | 'packet', listener: (packet: Packet, rinfo: RemoteInfo) => void): this;
    on(event: 'error' | 'warning', listener: (err: Error) => void): this;
    on(event: 'ready', listener: () => void): this;
    query(questions: { name: string; type: string }[], cb?: (err: Error | null) => void): void;
    respond(packet: Packet, cb?: (err: Error | null) => void): void;
    destroy(cb?: () => void): void;
  }
  function multicastDns(options?: Options): MulticastDns;
  export default multicastDns;
}
