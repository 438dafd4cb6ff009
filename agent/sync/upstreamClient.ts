import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { AgentError, InternalError, PeerError, TimeoutError } from '../errors.js';
import type { UpstreamAdapter, UpstreamAnswer } from './adapter.js';

export type { UpstreamAnswer } from './adapter.js';

export interface UpstreamOptions {
  baseUrl: string;
  gatewayId: string;
  /** PEM bundle the receiver's certificate must chain to: always checked. */
  caFile: string;
  /** Mutual TLS with the agent's client certificate, when given. */
  clientCertificate?: { cert: string; key: string };
  /** Bearer token, read from its file when the client is made and when reread after a 401. */
  tokenFile?: string;
  timeoutMs: number;
}

/** The network went wrong (refused, reset, timed out, TLS refused): no answer to look at. */
export class UpstreamUnreachable extends AgentError {
  readonly code = 'UPSTREAM_UNREACHABLE' as const;
}

/**
 * The HTTP side of the upstream contract (docs/upstream-api.md): HTTPS
 * only, the receiver's certificate checked against the configured CA
 * bundle and its name against the URL (never skipped), mutual TLS and/or a
 * bearer token, and a timeout on every request.
 */
export class UpstreamClient implements UpstreamAdapter {
  private readonly agent: Agent;
  private token: string | undefined;
  tokenVersion = 0;
  private readonly base: URL;

  constructor(private readonly o: UpstreamOptions) {
    this.base = new URL(o.baseUrl.replace(/\/+$/, '') + '/');
    if (this.base.protocol !== 'https:') throw new InternalError(`sync.baseUrl must be an https:// URL, not ${o.baseUrl}`);
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: 4,
      ca: readFileSync(o.caFile, 'utf8'),
      // Explicit: NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment must not turn the check off.
      rejectUnauthorized: true,
      ...(o.clientCertificate ? { cert: o.clientCertificate.cert, key: o.clientCertificate.key } : {}),
    });
    this.rereadToken();
  }

  /** Reads the token file again (after a 401); returns whether it changed. */
  rereadToken(): boolean {
    if (!this.o.tokenFile) return false;
    const before = this.token;
    this.token = readFileSync(this.o.tokenFile, 'utf8').split(/\r?\n/)[0]?.trim() || undefined;
    if (this.token === before) return false;
    this.tokenVersion += 1;
    return true;
  }

  postBatch(idempotencyKey: string, body: string): Promise<UpstreamAnswer> {
    return this.call(
      'POST',
      `v1/gateways/${encodeURIComponent(this.o.gatewayId)}/devices:batch`,
      { 'idempotency-key': idempotencyKey, 'content-type': 'application/json' },
      body,
    );
  }

  /** The events carry their own ids, by which the receiver dedups: no Idempotency-Key. */
  postEvents(body: string): Promise<UpstreamAnswer> {
    return this.call('POST', `v1/gateways/${encodeURIComponent(this.o.gatewayId)}/events:batch`, { 'content-type': 'application/json' }, body);
  }

  listDevices(cursor: string | undefined, limit: number): Promise<UpstreamAnswer> {
    const q = new URLSearchParams({ limit: String(limit), ...(cursor ? { cursor } : {}) });
    return this.call('GET', `v1/gateways/${encodeURIComponent(this.o.gatewayId)}/devices?${q.toString()}`, {});
  }

  close(): void {
    this.agent.destroy();
  }

  private call(method: string, path: string, headers: Record<string, string>, body?: string): Promise<UpstreamAnswer> {
    const url = new URL(path, this.base);
    const tokenVersion = this.tokenVersion;
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            accept: 'application/json',
            ...headers,
            ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
            ...(body !== undefined ? { 'content-length': Buffer.byteLength(body) } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            // An answer larger than any the contract allows is cut off: a receiver cannot make the agent buffer without bound.
            if (size > 64 * 1024 * 1024) req.destroy(new PeerError('UPSTREAM_ANSWER_INVALID', 'answer larger than 64 MiB'));
            else chunks.push(c);
          });
          res.on('end', () => {
            clearTimeout(deadline);
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), tokenVersion });
          });
          res.on('error', (err) => reject(new UpstreamUnreachable(err.message, { cause: err })));
        },
      );
      // The whole request, not only an idle socket, is bounded by timeoutMs.
      const deadline = setTimeout(() => req.destroy(new TimeoutError(`no complete answer within ${this.o.timeoutMs} ms`)), this.o.timeoutMs);
      req.on('error', (err) => {
        clearTimeout(deadline);
        reject(new UpstreamUnreachable(`${method} ${url.origin}${url.pathname}: ${err.message}`, { cause: err }));
      });
      req.end(body);
    });
  }
}
