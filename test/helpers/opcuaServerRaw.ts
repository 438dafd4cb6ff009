import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { requireLoopback } from '../../scripts/lib/local.js';

export { requireLoopback };

/** A TCP listener on a loopback address that speaks no OPC UA. */
export interface RawTcpServer {
  host: string;
  port: number;
  /** opc.tcp://host:port, for a client to try. */
  endpointUrl: string;
  /** How many connections it accepted so far: proof a client got this far. */
  readonly connections: number;
  /** How many of them are still open: a client that gave up must have closed its own. */
  readonly open: number;
  stop(): Promise<void>;
}

async function listen(host: string, onConnection: (socket: Socket) => void, wantedPort = 0): Promise<RawTcpServer> {
  const sockets = new Set<Socket>();
  let connections = 0;
  const server: Server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    onConnection(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(wantedPort, requireLoopback(host), () => resolve());
  });
  const { port } = server.address() as { port: number };
  let stopped: Promise<void> | undefined;
  return {
    host,
    port,
    endpointUrl: `opc.tcp://${host}:${port}`,
    get connections() {
      return connections;
    },
    get open() {
      return sockets.size;
    },
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      });
      return stopped;
    },
  };
}

/** Accepts connections and never answers: a client's HEL goes unacknowledged until its own timeout. */
export function startHangingServer(host = '127.0.0.1', port = 0): Promise<RawTcpServer> {
  // It reads (and drops) what arrives, so it sees a client that closes; it never answers.
  return listen(host, (socket) => void socket.resume(), port);
}

/** Answers every connection with `bytes` random bytes (not an OPC UA ACK) and closes it. */
export function startGarbageServer(host = '127.0.0.1', bytes = 64): Promise<RawTcpServer> {
  return listen(host, (socket) => socket.end(randomBytes(bytes)));
}
