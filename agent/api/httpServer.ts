import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, type Registry } from 'prom-client';
import { STRONG_CIPHERS } from '../config/network.js';
import { defaultConfig } from '../config/schema.js';
import type { ApiErrorCode } from '../errorTable.js';
import { httpStatusOf, InternalError, ListenError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Service } from '../lifecycle/service.js';
import { ConnectionGuard, type ConnectionLimits } from './connectionGuard.js';
import { hostAllowed, listenerNames } from './hostCheck.js';

export type RouteHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  sendJsonText(res, status, JSON.stringify(body));
}

/** An answer whose JSON text is written already (a page of devices written straight from its rows). */
export function sendJsonText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(text);
}

/** Errors on this listener are JSON with a stable `code` and a message; the status is the code's (ERROR_TABLE). */
export function sendError(res: ServerResponse, code: ApiErrorCode, message: string): void {
  sendJson(res, httpStatusOf(code), { code, message });
}

/** PEM key and certificate (followed by its intermediates) the listener serves. */
export interface ListenerTls {
  key: string;
  cert: string;
}

export interface HttpDeps {
  log: Logger;
  host: string;
  port: number;
  /** http.names: further names clients reach the listener by (the Host header must name one of these, localhost, 127.0.0.1, [::1] or `host`). */
  names?: readonly string[];
  /** Default: those of the default configuration. */
  limits?: ConnectionLimits;
  /** Given: the listener speaks HTTPS (TLS 1.2 or later) with what this returns, asked once at start. */
  tls?: () => Promise<ListenerTls>;
  /** The TLS cipher suites offered, in order of preference (http.tls.ciphers). */
  ciphers?: readonly string[];
  /** Where the listener's connection metrics go. */
  registry?: Registry;
}

/**
 * The agent's local HTTP listener (health, metrics, the API), plain HTTP or
 * HTTPS. Parts register routes before start; the listener binds in `start()`.
 * Every request, whatever its route, must name the listener in its Host
 * header (421 otherwise): a page that rebinds its own DNS name to this
 * address reads nothing, not even /healthz or /metrics. Connections are
 * bounded (ConnectionGuard, Node's header and request timeouts).
 */
export class HttpService implements Service {
  readonly name = 'http';
  private server: Server | undefined;
  private readonly routes = new Map<string, Map<string, RouteHandler>>();
  private readonly prefixes: { method: string; prefix: string; handler: RouteHandler }[] = [];

  private readonly closedAtLimit: Counter | undefined;

  constructor(private readonly deps: HttpDeps) {
    if (!deps.registry) return;
    const guard = () => this.guard;
    const registers = [deps.registry];
    new Gauge({
      name: 'edge_agent_http_connections',
      help: 'Connections open on the local listener',
      registers,
      collect() {
        this.set(guard()?.size ?? 0);
      },
    });
    this.closedAtLimit = new Counter({
      name: 'edge_agent_http_connections_closed_at_limit_total',
      help: 'Connections closed because http.maxConnections was reached (the longest-waiting one without a request, else the new one)',
      registers,
    });
  }

  route(method: string, path: string, handler: RouteHandler): void {
    let byMethod = this.routes.get(path);
    if (!byMethod) this.routes.set(path, (byMethod = new Map()));
    if (byMethod.has(method)) throw new InternalError(`route ${method} ${path} registered twice`);
    byMethod.set(method, handler);
  }

  /** A route for every path below `prefix` (the handler reads the rest, such as a device id). */
  routePrefix(method: string, prefix: string, handler: RouteHandler): void {
    this.prefixes.push({ method, prefix, handler });
  }

  private guard: ConnectionGuard | undefined;

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Every answer, page or API: no type sniffing, no referrer sent on, never inside another site's frame.
    res.setHeader('x-content-type-options', 'nosniff');
    res.setHeader('referrer-policy', 'no-referrer');
    res.setHeader('x-frame-options', 'DENY');
    if (!hostAllowed(req.headers.host, listenerNames(this.deps.host, this.deps.names ?? []))) {
      return sendError(res, 'HOST_NOT_ALLOWED', 'the Host header does not name this listener (localhost, 127.0.0.1, [::1], http.host or an http.names entry)');
    }
    const path = new URL(req.url ?? '/', 'http://local').pathname;
    let byMethod = this.routes.get(path);
    if (!byMethod) {
      const below = this.prefixes.filter((p) => path.startsWith(p.prefix) && path.length > p.prefix.length);
      if (below.length > 0) byMethod = new Map(below.map((p) => [p.method, p.handler]));
    }
    if (!byMethod) return sendError(res, 'NOT_FOUND', `no route ${path}`);
    const method = req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET');
    const handler = byMethod.get(method);
    if (!handler) {
      res.setHeader('allow', [...byMethod.keys()].join(', '));
      return sendError(res, 'METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${path}`);
    }
    try {
      await handler(req, res);
    } catch (err) {
      this.deps.log.error({ err, path }, 'request handler failed');
      if (!res.headersSent) sendError(res, 'INTERNAL', 'internal error; see the agent log');
      else res.destroy();
    }
  }

  async start(signal: AbortSignal): Promise<void> {
    const handler = (req: IncomingMessage, res: ServerResponse) => void this.handle(req, res);
    const tls = this.deps.tls ? await this.deps.tls() : undefined;
    signal.throwIfAborted();
    const { maxConnections, headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs } = defaultConfig().http;
    const limits = this.deps.limits ?? { maxConnections, headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs };
    const options = {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // How often Node looks for connections past those timeouts (its default, 30 s, would let a slow client stay that much longer).
      connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs),
    };
    let server: Server;
    if (tls) {
      const https = createHttpsServer(
        {
          ...options,
          key: tls.key,
          cert: tls.cert,
          minVersion: 'TLSv1.2',
          ciphers: (this.deps.ciphers ?? STRONG_CIPHERS).join(':'),
          honorCipherOrder: true,
          handshakeTimeout: limits.headersTimeoutMs,
        },
        handler,
      );
      // A client speaking plain HTTP, or not trusting the certificate, ends here; the listener goes on.
      https.on('tlsClientError', (err) => this.deps.log.debug({ err }, 'tls handshake failed'));
      server = https;
    } else {
      server = createServer(options, handler);
    }
    this.guard = new ConnectionGuard({
      log: this.deps.log,
      limits,
      onLimit: () => this.closedAtLimit?.inc(),
      ...(tls ? { plainHint: (host, path) => this.plainHint(host, path) } : {}),
    });
    this.guard.attach(server);
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const why =
          err.code === 'EADDRINUSE'
            ? `${this.deps.host}:${this.deps.port} is already in use (another agent running?); change http.port`
            : err.code === 'EADDRNOTAVAIL'
              ? `${this.deps.host} is not an address of this machine; change http.host`
              : err.message;
        reject(new ListenError(`cannot listen on ${this.deps.host}:${this.deps.port}: ${why}`, { cause: err }));
      };
      server.once('error', onError);
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
      server.listen({ host: this.deps.host, port: this.deps.port }, () => {
        server.off('error', onError);
        server.on('error', (err) => this.deps.log.error({ err }, 'http server error'));
        resolve();
      });
    });
    const { address, port } = this.address();
    this.deps.log.info({ host: address, port, scheme: tls ? 'https' : 'http' }, 'http listening');
  }

  /** What a plain-HTTP request on the HTTPS port is told: the https:// URL it meant, when its Host names this listener. */
  private plainHint(host: string | undefined, path: string | undefined): string {
    const named = host !== undefined && hostAllowed(host, listenerNames(this.deps.host, this.deps.names ?? []));
    const url = named ? `https://${host}${path ?? '/'}` : 'https:// and a name of this listener';
    return `this listener speaks HTTPS only: use ${url} (the CA chain to trust is at GET /ca/chain; docs/api.md#tls)`;
  }

  address(): { address: string; port: number } {
    const info = this.server?.address() as AddressInfo | null | undefined;
    if (!info) throw new InternalError('http server is not listening');
    return { address: info.address, port: info.port };
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    if (!server.listening) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // Keep-alive connections would hold close() open; idle ones go now,
      // busy ones get one second to finish their response.
      server.closeIdleConnections();
      setTimeout(() => server.closeAllConnections(), 1_000).unref();
    });
  }
}
