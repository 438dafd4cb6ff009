import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import * as tls from 'node:tls';

/** A listening stub: its port on 127.0.0.1, and close(), which also ends the connections it holds. */
export interface Stub {
  port: number;
  /** How many connections it accepted (a test checks that a refused login never connected). */
  connections(): number;
  close(): Promise<void>;
}

async function listen(server: Server, sockets: Set<Socket>): Promise<Stub> {
  let accepted = 0;
  server.on('connection', (socket: Socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the stub has no TCP port');
  return {
    port: address.port,
    connections: () => accepted,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A TCP server that accepts connections and never answers: a directory that hangs, for the timeouts. */
export function blackhole(): Promise<Stub> {
  const sockets = new Set<Socket>();
  return listen(createServer(), sockets);
}

/**
 * A TLS server whose certificate (from a trusted CA, but naming another
 * host) completes the handshake and then says nothing: a client that
 * checks the name refuses it before it sends anything.
 */
export function wrongNameTls(certPath: string, keyPath: string): Promise<Stub> {
  const sockets = new Set<Socket>();
  const server = tls.createServer({ cert: readFileSync(certPath), key: readFileSync(keyPath) });
  server.on('secureConnection', (socket) => sockets.add(socket));
  server.on('tlsClientError', () => {});
  return listen(server, sockets);
}

/**
 * A plain LDAP server that refuses StartTLS (an ExtendedResponse with
 * protocolError, as a server without TLS answers) and records every byte it
 * is sent after that: a client that then binds in the clear would show
 * its password here.
 */
export async function noStartTls(): Promise<Stub & { received(): Buffer }> {
  const sockets = new Set<Socket>();
  const chunks: Buffer[] = [];
  const server = createServer((socket) => {
    let answered = false;
    socket.on('data', (data: Buffer) => {
      chunks.push(data);
      if (answered) return;
      answered = true;
      // LDAPMessage: SEQUENCE { messageID INTEGER, extendedResp [APPLICATION 24] { resultCode 2, matchedDN "", diagnostic } }.
      const lengthBytes = (data[1] ?? 0) & 0x80 ? (data[1] ?? 0) & 0x7f : 0;
      const at = 2 + lengthBytes;
      const id = data.subarray(at, at + 2 + (data[at + 1] ?? 1));
      const message = Buffer.from('StartTLS not supported');
      const body = Buffer.concat([Buffer.from([0x0a, 0x01, 0x02, 0x04, 0x00, 0x04, message.length]), message]);
      const op = Buffer.concat([Buffer.from([0x78, body.length]), body]);
      socket.write(Buffer.concat([Buffer.from([0x30, id.length + op.length]), id, op]));
    });
  });
  const stub = await listen(server, sockets);
  return { ...stub, received: () => Buffer.concat(chunks) };
}
