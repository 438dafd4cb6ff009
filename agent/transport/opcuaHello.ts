import { Socket } from 'node:net';
import { Deadline, ProbeTimeout } from './deadline.js';
import { PeerError } from '../errors.js';

/**
 * OPC UA TCP's first exchange (OPC 10000-6 7.1.2): HEL, then ACK or ERR.
 * Done on a socket of our own before node-opcua connects, because
 * node-opcua's connect() cannot be ended while it waits for the ACK: a server
 * that never answers would keep a socket open for the life of the agent.
 * Resolves when the server acknowledges; rejects with the reason otherwise
 * (a ProbeTimeout when `budget` runs out first), and always destroys the
 * socket.
 */
export function opcuaHello(url: string, budget: number | Deadline): Promise<void> {
  const deadline = Deadline.of(budget);
  const u = new URL(url);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || 4840);
  const endpoint = Buffer.from(url, 'utf8');
  const hello = Buffer.alloc(32 + endpoint.length);
  hello.write('HELF', 0, 'ascii');
  hello.writeUInt32LE(hello.length, 4);
  hello.writeUInt32LE(0, 8); // protocol version
  hello.writeUInt32LE(65_535, 12); // receive buffer
  hello.writeUInt32LE(65_535, 16); // send buffer
  hello.writeUInt32LE(0, 20); // max message size: no limit
  hello.writeUInt32LE(0, 24); // max chunk count: no limit
  hello.writeInt32LE(endpoint.length, 28);
  endpoint.copy(hello, 32);
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    let received = Buffer.alloc(0);
    const finish = (err?: Error) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    // The deadline's own clock, not socket.setTimeout (which counts from the last byte): the connect counts too.
    const timer = setTimeout(
      () => finish(new ProbeTimeout(`no OPC UA acknowledgement from ${host}:${port} within ${deadline.budgetMs} ms`)),
      deadline.remaining(),
    );
    socket.once('error', (err) => finish(err));
    socket.once('close', () => finish(new PeerError('OPCUA_SERVER_ERROR', `${host}:${port} closed the connection before acknowledging`)));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 8) return;
      const type = received.subarray(0, 4).toString('latin1');
      if (type === 'ACKF') return finish();
      if (type === 'ERRF') {
        const status = received.length >= 12 ? received.readUInt32LE(8).toString(16).padStart(8, '0') : 'unknown';
        return finish(new PeerError('OPCUA_SERVER_ERROR', `${host}:${port} refused the connection (OPC UA error 0x${status})`));
      }
      finish(new PeerError('OPCUA_SERVER_ERROR', `${host}:${port} does not speak OPC UA TCP`));
    });
    socket.connect(port, host, () => socket.write(hello));
  });
}
