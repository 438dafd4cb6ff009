import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { writeFileAtomic } from '../../certs/keys/fileKey.js';
import type { CaService } from '../ca/caService.js';
import type { Config } from '../config/schema.js';
import type { EventBus } from '../events.js';
import type { Logger } from '../log.js';
import { AuditRepository } from '../store/auditRepository.js';
import type { Store } from '../store/database.js';
import { UserRepository } from '../store/userRepository.js';
import { accountRoutes } from './accountRoutes.js';
import { ADMIN_TOKEN_FILE, allowed, API_URL_FILE, authenticate, FailureLimiter, hashSecret, newTokenSecret } from './auth.js';
import { deviceRoutes } from './deviceRoutes.js';
import { discoveryRoutes } from './discoveryRoutes.js';
import { sendError, sendJson, type HttpService } from './httpServer.js';
import { operationRoutes } from './operationRoutes.js';
import { z } from 'zod';
import { ApiError, jsonBody, match, type Route } from './router.js';

export interface ApiDeps {
  log: Logger;
  config: () => Config;
  store: () => Store;
  bus: EventBus;
  ca: Pick<CaService, 'revoke'>;
}

/** Every route of the API, in matching order (a literal segment before a parameter). docs/api.md lists them with their permission. */
export function apiRoutes(deps: ApiDeps): Route[] {
  return [...discoveryRoutes(deps), ...deviceRoutes(deps), ...operationRoutes(deps), ...accountRoutes(deps)];
}


/**
 * The versioned local API (/api/v1). Every route is behind one guard: the
 * Host header must name this listener (no DNS rebinding), an address with
 * too many failed authentications waits, the bearer token must be valid,
 * and its user's role must hold the route's permission (PERMISSIONS in
 * auth.ts). Bodies are JSON, capped, and checked against strict schemas
 * (unknown fields refused). Errors are JSON with a stable code. No cookies
 * are read or set: a browser cannot be made to act for a technician.
 * Health and metrics stay outside the API.
 */
export class Api {
  /** 30 failed authentications a minute per address, then a wait: guessing a 256-bit token is hopeless anyway. */
  private readonly failures = new FailureLimiter(30, 60_000);

  private readonly routes: Route[];

  constructor(
    private readonly http: HttpService,
    private readonly deps: ApiDeps,
  ) {
    this.routes = apiRoutes(deps);
    for (const method of ['GET', 'POST', 'PUT', 'DELETE']) http.routePrefix(method, '/api/v1/', (req, res) => this.handle(req, res));
  }

  /**
   * At the first start (no user yet): an `admin` user and a token for it in
   * <dataDir>/admin.token (0600). The log says where, never what.
   */
  bootstrap(): void {
    const users = new UserRepository(this.deps.store());
    if (users.count() > 0) return;
    const file = join(this.deps.config().agent.dataDir, ADMIN_TOKEN_FILE);
    const secret = newTokenSecret();
    const store = this.deps.store();
    // The file first (replacing one left from an earlier database): a token that cannot be handed over is not made, and the next start tries again.
    writeFileAtomic(file, `${secret}\n`, 0o600);
    store.durable(() => {
      const admin = users.add('admin', 'admin', 'agent');
      users.addToken(admin.id, hashSecret(secret), 'first start', undefined);
    });
    this.deps.log.warn({ file }, 'first start: an admin token for the local API is in this file (readable by the agent user only); make your own users and delete it');
  }

  /** Writes <dataDir>/api.url: the CLI finds the API there when http.port is 0. */
  published(url: string): void {
    writeFileAtomic(join(this.deps.config().agent.dataDir, API_URL_FILE), `${url}\n`, 0o644);
  }

  private hosts(): Set<string> {
    const { host, port, names: configured } = this.deps.config().http;
    const names = ['localhost', '127.0.0.1', '[::1]', ...[host, ...configured].map((n) => (n.includes(':') ? `[${n}]` : n))];
    return new Set(names.flatMap((n) => [n, `${n}:${this.http.address().port || port}`]).map((n) => n.toLowerCase()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.hosts().has((req.headers.host ?? '').toLowerCase())) {
      return sendError(res, 421, 'HOST_NOT_ALLOWED', 'the Host header does not name this listener');
    }
    const url = new URL(req.url ?? '/', 'http://local');
    const found = match(this.routes, req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET'), url.pathname);
    if (!found) return sendError(res, 404, 'NOT_FOUND', `no route ${url.pathname}`);
    if ('allow' in found) {
      res.setHeader('allow', found.allow.join(', '));
      return sendError(res, 405, 'METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${url.pathname}`);
    }
    const address = req.socket.remoteAddress ?? '?';
    if (this.failures.blocked(address)) return sendError(res, 429, 'TOO_MANY_FAILURES', 'too many failed authentications from this address; wait a minute');
    const store = this.deps.store();
    const auth = authenticate(req.headers.authorization, new UserRepository(store));
    if (!auth.ok) {
      this.failures.fail(address);
      return sendError(res, 401, 'UNAUTHENTICATED', `no valid token (${auth.failure})`);
    }
    const { route, params } = found;
    const user = auth.user;
    if (!allowed(user.role, route.permission)) return sendError(res, 403, 'FORBIDDEN', `the ${user.role} role may not do this (${route.permission})`);
    try {
      const answer = await route.handle({
        req,
        res,
        user,
        params,
        query: url.searchParams,
        body: (schema) => jsonBody(req, schema),
        noBody: async () => void (await jsonBody(req, z.strictObject({}))),
        commit: (change) => store.durable(change),
        audit: (action, target, outcome, details) => void new AuditRepository(store).add({ actor: user.name, role: user.role, action, target, outcome, ...(details ? { details } : {}) }),
      });
      if (answer) sendJson(res, answer.status ?? 200, answer.body);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.status === 413) res.setHeader('connection', 'close');
      sendError(res, err.status, err.code, err.message);
    }
  }
}
