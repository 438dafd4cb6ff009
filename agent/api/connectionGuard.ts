import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { httpStatusOf } from '../errors.js';
import type { Logger } from '../log.js';
import { LogThrottle } from './logThrottle.js';

/** How the listener bounds its connections (http.maxConnections and the http.*TimeoutMs keys). */
export interface ConnectionLimits {
  maxConnections: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
}

/** The first byte of a TLS handshake record. */
const TLS_HANDSHAKE = 0x16;
/** How much of a plain-HTTP request on the TLS port is read to answer it. */
const MAX_PLAIN_HEAD = 8 * 1024;

const key = (socket: Socket): string => `${socket.remoteAddress}|${socket.remotePort}`;

/**
 * Keeps the listener answering under a flood of slow or idle clients.
 * Node closes a connection that has not sent its headers within
 * headersTimeoutMs, or its request within requestTimeoutMs (the http
 * server's own limits, set by HttpService); this adds the cap on
 * connections. At the cap, a new connection does not wait and is not
 * refused: the connection that has been waiting longest without a request
 * in progress (still sending its headers, in its TLS handshake, or idle
 * between keep-alive requests) is closed to make room. A client that sends
 * its request promptly thus gets through however many slow ones hold
 * connections; only when every connection has a request in progress is
 * the new one closed.
 *
 * With TLS it also reads the first byte of each connection: a plain-HTTP
 * request on the HTTPS port is answered 400 with a hint instead of ending
 * in a failed handshake with no answer.
 */
export class ConnectionGuard {
  /** Open connections, least recently busy first; `busy` counts requests in progress. */
  private readonly open = new Map<string, { socket: Socket; busy: number }>();
  private readonly evictions: LogThrottle;

  constructor(
    private readonly deps: {
      log: Logger;
      limits: ConnectionLimits;
      /** Called for each connection closed at the cap. */
      onLimit?: () => void;
      /** TLS only: the answer's message for a plain-HTTP request, from its Host header and path. */
      plainHint?: (host: string | undefined, path: string | undefined) => string;
    },
  ) {
    this.evictions = new LogThrottle(deps.log, { perKey: 5, perWindow: 5, windowMs: 60_000 });
  }

  get size(): number {
    return this.open.size;
  }

  /**
   * Puts the guard in front of `server`'s own connection handling (the
   * documented way in: `server.emit('connection', socket)` hands a socket
   * to an http or https server; here its listeners are called directly).
   */
  attach(server: Server): void {
    const handlers = server.listeners('connection') as ((socket: Socket) => void)[];
    server.removeAllListeners('connection');
    const dispatch = (socket: Socket) => {
      for (const handler of handlers) handler.call(server, socket);
    };
    server.on('connection', (socket: Socket) => this.admit(socket, dispatch));
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.busy(req, res));
  }

  private admit(socket: Socket, dispatch: (socket: Socket) => void): void {
    // A socket already gone has no address: nothing to serve.
    if (!socket.remoteAddress) return void socket.destroy();
    const id = key(socket);
    this.open.set(id, { socket, busy: 0 });
    socket.once('close', () => {
      // The same address and port may belong to a newer connection by now.
      if (this.open.get(id)?.socket === socket) this.open.delete(id);
    });
    if (this.open.size > this.deps.limits.maxConnections) {
      const idle = [...this.open].find(([k, c]) => c.busy === 0 && k !== id);
      this.deps.onLimit?.();
      this.evictions.warn(
        'limit',
        {
          open: this.open.size,
          maxConnections: this.deps.limits.maxConnections,
          closed: idle ? 'the longest-waiting connection without a request' : 'the new connection: every other one has a request in progress',
        },
        'http connection limit reached',
        'http connection limit: lines not logged (too many)',
      );
      if (!idle) {
        this.open.delete(id);
        socket.destroy();
        return;
      }
      this.open.delete(idle[0]);
      idle[1].socket.destroy();
    }
    if (this.deps.plainHint) this.sniff(socket, dispatch);
    else dispatch(socket);
  }

  /** A request in progress keeps its connection; when the last one ends, the connection counts as waiting from then. */
  private busy(req: IncomingMessage, res: ServerResponse): void {
    const id = key(req.socket);
    const entry = this.open.get(id);
    if (!entry) return;
    entry.busy += 1;
    res.once('close', () => {
      entry.busy -= 1;
      if (entry.busy === 0 && this.open.get(id) === entry) {
        this.open.delete(id);
        this.open.set(id, entry);
      }
    });
  }

  /** Reads the first byte: a TLS handshake goes on to the TLS server (the byte is put back), anything else gets the hint. */
  private sniff(socket: Socket, dispatch: (socket: Socket) => void): void {
    const timer = setTimeout(() => socket.destroy(), this.deps.limits.headersTimeoutMs);
    socket.once('close', () => clearTimeout(timer));
    socket.on('error', () => socket.destroy());
    const first = () => {
      const chunk = socket.read() as Buffer | null;
      if (chunk === null) return;
      socket.off('readable', first);
      if (chunk[0] === TLS_HANDSHAKE) {
        clearTimeout(timer);
        // Node's TLS socket takes over what is buffered on the socket it wraps.
        socket.unshift(chunk);
        dispatch(socket);
      } else if (/^[A-Z]/.test(String.fromCharCode(chunk[0]!))) {
        this.answerPlain(socket, chunk);
      } else {
        socket.destroy();
      }
    };
    socket.on('readable', first);
  }

  private answerPlain(socket: Socket, start: Buffer): void {
    let head = start.toString('latin1');
    const reply = () => {
      socket.off('data', more);
      const [line = '', ...headers] = head.split('\r\n');
      const path = /^[A-Z]+ (\/[\x21-\x7e]{0,200}) HTTP\/1\.[01]$/.exec(line)?.[1];
      const host = headers
        .find((h) => /^host:/i.test(h))
        ?.slice(5)
        .trim();
      const body = JSON.stringify({ code: 'HTTPS_REQUIRED', message: this.deps.plainHint!(host, path) });
      const status = httpStatusOf('HTTPS_REQUIRED');
      socket.end(
        `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\n` +
          `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    const more = (chunk: Buffer) => {
      head += chunk.toString('latin1');
      if (head.includes('\r\n\r\n') || head.length >= MAX_PLAIN_HEAD) reply();
    };
    if (head.includes('\r\n\r\n') || head.length >= MAX_PLAIN_HEAD) return reply();
    socket.on('data', more);
  }
}
