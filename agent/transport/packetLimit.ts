import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

/**
 * Follows MQTT packet boundaries in a byte stream by reading each fixed
 * header's remaining-length varint, so an oversize packet is caught from its
 * first bytes. mqtt-packet (under aedes) has no maximum packet size: it
 * buffers a packet body of any announced length, up to 256 MiB, before
 * parsing it.
 */
export class PacketLimit {
  private state: 'type' | 'length' | 'body' = 'type';
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private left = 0;

  constructor(private readonly maxRemainingLength: number) {}

  /**
   * Scans the next bytes of the stream. Returns the (possibly partial)
   * remaining length of the first packet over the limit, Infinity for a
   * varint longer than the four bytes MQTT allows, otherwise undefined.
   */
  scan(chunk: Buffer): number | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'body') {
        const n = Math.min(this.left, chunk.length - i);
        this.left -= n;
        i += n;
        if (this.left === 0) this.state = 'type';
        continue;
      }
      const byte = chunk[i++]!;
      if (this.state === 'type') {
        this.state = 'length';
        this.length = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
        continue;
      }
      this.length += (byte & 0x7f) * this.multiplier;
      this.multiplier *= 128;
      this.lengthBytes++;
      // The value only grows with further bytes: refuse as soon as it is too big.
      if (this.length > this.maxRemainingLength) return this.length;
      if (byte & 0x80) {
        if (this.lengthBytes === 4) return Infinity;
        continue;
      }
      this.left = this.length;
      this.state = this.left === 0 ? 'type' : 'body';
    }
    return undefined;
  }
}

/**
 * The socket as aedes should see it: the same bytes both ways, except that
 * the connection is destroyed, before aedes gets the bytes, as soon as a
 * packet announces a remaining length over `maxRemainingLength`.
 * `onExceeded` is called once, before the socket is destroyed.
 */
export function limitPackets(socket: Socket, maxRemainingLength: number, onExceeded: (remainingLength: number) => void): Duplex {
  const limit = new PacketLimit(maxRemainingLength);
  const stream = new Duplex({
    allowHalfOpen: false,
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      if (socket.write(chunk)) callback();
      else socket.once('drain', () => callback());
    },
    // mqtt-packet writes a packet in several chunks while corked: one socket write each, one callback.
    writev(chunks, callback) {
      let flowing = true;
      for (const { chunk } of chunks) flowing = socket.write(chunk as Buffer);
      if (flowing) callback();
      else socket.once('drain', () => callback());
    },
    final(callback) {
      socket.end();
      callback();
    },
    destroy(error, callback) {
      // aedes destroys the connection after a DISCONNECT and right after a
      // refusing CONNACK. Close gracefully (TLS close_notify, FIN) so queued
      // bytes leave and the peer sees an orderly close rather than a reset,
      // but never wait long for a peer that does not read.
      if (socket.destroyed) return callback(error);
      socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
      callback(error);
    },
  });
  socket.on('data', (chunk: Buffer) => {
    if (stream.destroyed) return;
    const exceeded = limit.scan(chunk);
    if (exceeded !== undefined) {
      onExceeded(exceeded);
      socket.destroy();
      return;
    }
    if (!stream.push(chunk)) socket.pause();
  });
  socket.on('end', () => stream.push(null));
  socket.on('close', () => stream.destroy());
  socket.on('error', (err) => stream.destroy(err));
  return stream;
}
