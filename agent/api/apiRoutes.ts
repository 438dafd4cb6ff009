import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { writeFileAtomic } from '../../certs/keys/fileKey.js';
import type { CaService } from '../ca/caService.js';
import type { DirectoryLogins } from '../directory/logins.js';
import type { SessionWatch } from '../directory/sessionWatch.js';
import type { Config } from '../config/schema.js';
import type { ConfigService } from '../configuration/configService.js';
import type { EventBus } from '../events.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import type { Repositories } from '../store/repositories.js';
import { accountRoutes } from './accountRoutes.js';
import { InternalError } from '../errors.js';
import { API_URL_FILE, refusal } from './auth.js';
import { AuthGuard, type Verdict } from './authGuard.js';
import { ConsoleCookies } from './consoleCookie.js';
import { configRoutes } from './configRoutes.js';
import { consoleRoutes } from './consoleRoutes.js';
import { consoleSessionRoutes } from './consoleSession.js';
import { deviceRoutes } from './deviceRoutes.js';
import { discoveryRoutes } from './discoveryRoutes.js';
import { enrollmentRoutes } from './enrollmentRoutes.js';
import { FirstAdminToken } from './firstAdmin.js';
import { sendError, sendJson, sendJsonText, type HttpService } from './httpServer.js';
import { operationRoutes } from './operationRoutes.js';
import { reportRoutes, type ReportRouteDeps } from './reportRoutes.js';
import type { Principal } from './principal.js';
import { ApiError, jsonBody, match, parseQuery, type Route } from './router.js';
import { loginGate, sessionRoutes, type LoginGate } from './sessionRoutes.js';

/** What a token presented at the console's sign-in is counted under in the guard's logs and metrics. */
const LOGIN_ROUTE = { method: 'POST', path: '/api/v1/console/session' } as const;

export interface ApiDeps {
  log: Logger;
  config: () => Config;
  store: Store;
  repos: Repositories;
  bus: EventBus;
  ca: Pick<CaService, 'revoke' | 'chainPem'>;
  registry: Registry;
  logins: DirectoryLogins;
  watch: Pick<SessionWatch, 'end' | 'tell'>;
  /** Where devices reach the broker (the onboarding page shows them with an enrollment token). */
  brokers?: () => { url: string; purpose: string }[];
  /** Device configuration (absent when configuration.enabled is false). */
  configuration?: ConfigService;
  /** The device report (GET /api/v1/report). */
  report?: ReportRouteDeps['report'];
}

/** What the console's routes need of the API: its login gate, its cookies and its guard on a presented secret. */
export interface ConsoleParts {
  gate: LoginGate;
  cookies: ConsoleCookies;
  check: (req: IncomingMessage, secret: string) => Promise<Verdict>;
}

/** Whom a route open to anyone (the login) sees as its caller: no one, with the least of roles. */
const ANONYMOUS: Principal = Object.freeze({ name: '(anonymous)', role: 'viewer', source: 'local', scope: [] });

/** Every route of the API, in matching order (a literal segment before a parameter). docs/api.md lists them with their permission and query. */
export function apiRoutes(
  deps: ApiDeps,
  parts: ConsoleParts = {
    gate: loginGate(deps),
    cookies: new ConsoleCookies(),
    check: () => Promise.reject(new InternalError('apiRoutes without the API: its routes are listed, not served')),
  },
): Route[] {
  return [
    ...sessionRoutes(deps, parts.gate),
    ...consoleSessionRoutes({ ...parts, watch: deps.watch, repos: deps.repos, durable: (change) => deps.store.durable(change) }),
    ...consoleRoutes({ ...deps, brokers: deps.brokers ?? (() => []) }),
    ...discoveryRoutes(deps),
    ...deviceRoutes(deps),
    ...enrollmentRoutes(deps),
    ...operationRoutes(deps),
    ...accountRoutes(deps),
    ...configRoutes(deps),
    ...reportRoutes(deps),
  ];
}

/**
 * The versioned local API (/api/v1). Every route is behind one guard: the
 * listener has checked the Host header (no DNS rebinding); the route and
 * its query must exist; the bearer token must be valid (AuthGuard: a valid
 * token is always served, failures are counted, limited, logged and
 * measured); and its user's role must hold the route's permission
 * (PERMISSIONS in auth.ts; a refusal is audited). Bodies are JSON, capped,
 * and checked against strict schemas (unknown fields refused). Errors are
 * JSON with a stable code. The web console's cookie (consoleCookie.ts)
 * carries the same credential as a Bearer token would; a change it
 * authenticates needs the CSRF header too, so another site's page cannot
 * act for a technician. Health and metrics stay outside the API.
 */
export class Api {
  private readonly routes: Route[];
  private readonly guard: AuthGuard;
  private readonly firstAdmin: FirstAdminToken;
  private readonly cookies = new ConsoleCookies();

  constructor(
    http: HttpService,
    private readonly deps: ApiDeps,
  ) {
    this.firstAdmin = new FirstAdminToken({ log: deps.log, dataDir: () => deps.config().agent.dataDir, store: deps.store, users: deps.repos.users });
    this.guard = new AuthGuard({
      log: deps.log,
      repos: deps.repos,
      registry: deps.registry,
      firstAdmin: this.firstAdmin,
      maxConnections: deps.config().http.maxConnections,
    });
    this.routes = apiRoutes(deps, {
      gate: loginGate(deps),
      cookies: this.cookies,
      check: (req, secret) => this.guard.check(req, `Bearer ${secret}`, LOGIN_ROUTE),
    });
    for (const method of ['GET', 'POST', 'PUT', 'DELETE']) http.routePrefix(method, '/api/v1/', (req, res) => this.handle(req, res));
  }

  /** At each start: the first administrator's token at the first, its end at later ones (FirstAdminToken). */
  bootstrap(): void {
    this.firstAdmin.atStart();
  }

  /** Writes <dataDir>/api.url: the CLI finds the API there when http.port is 0. */
  published(url: string): void {
    writeFileAtomic(join(this.deps.config().agent.dataDir, API_URL_FILE), `${url}\n`, 0o644);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://local');
    const found = match(this.routes, req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET'), url.pathname);
    if (!found) return sendError(res, 'NOT_FOUND', `no route ${url.pathname}`);
    if ('allow' in found) {
      res.setHeader('allow', found.allow.join(', '));
      return sendError(res, 'METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${url.pathname}`);
    }
    const { route, params } = found;
    let user: Principal = ANONYMOUS;
    if (route.permission !== 'anyone') {
      // A Bearer header wins; the console's cookie is read only without one.
      const cookie = req.headers.authorization === undefined ? this.cookies.secretOf(req) : undefined;
      const verdict = await this.guard.check(req, cookie ? `Bearer ${cookie}` : req.headers.authorization, route, cookie !== undefined);
      if (!verdict.ok) {
        if (cookie) this.cookies.clear(req, res);
        if (verdict.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(verdict.retryAfterSeconds));
        // A client over its limit gets no keep-alive: each guess costs it a new connection.
        if (verdict.code === 'TOO_MANY_FAILURES') res.setHeader('connection', 'close');
        return sendError(res, verdict.code, verdict.message);
      }
      user = verdict.principal;
      const forged = cookie ? this.cookies.csrfRefusal(req, cookie) : undefined;
      if (forged) {
        this.guard.refused(req, route, user, url.pathname, forged);
        return sendError(res, 'CSRF_FAILED', forged);
      }
      const why = refusal(user, route.permission);
      if (why) {
        this.guard.refused(req, route, user, url.pathname, why);
        return sendError(res, 'FORBIDDEN', why);
      }
    }
    const { store, repos } = this.deps;
    try {
      const answer = await route.handle({
        req,
        res,
        user,
        params,
        query: parseQuery(route.query, url.searchParams),
        body: (schema) => jsonBody(req, schema),
        noBody: async () => void (await jsonBody(req, z.strictObject({}))),
        commit: (change) => store.durable(change),
        audit: (action, target, outcome, details) =>
          void repos.audit.add({ actor: user.name, role: user.role, action, target, outcome, ...(details ? { details } : {}) }),
      });
      if (answer && 'json' in answer) sendJsonText(res, answer.status ?? 200, answer.json);
      else if (answer) sendJson(res, answer.status ?? 200, answer.body);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.code === 'BODY_TOO_LARGE') res.setHeader('connection', 'close');
      sendError(res, err.code, err.message);
    }
  }
}
