import { existsSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { writeFileAtomic } from '../../certs/keys/fileKey.js';
import type { Config } from '../config/schema.js';
import type { DeviceState, Protocol } from '../inventory/device.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import { DeviceRepository } from '../store/deviceRepository.js';
import { PushRepository } from '../store/pushRepository.js';
import { SyncRepository } from '../store/syncRepository.js';
import { UserRepository } from '../store/userRepository.js';
import { SYNC_STATE } from '../sync/syncService.js';
import { allowed, authenticate, FailureLimiter, hashSecret, newTokenSecret, type Permission } from './auth.js';
import { sendError, sendJson, type HttpService } from './httpServer.js';

export interface ApiDeps {
  log: Logger;
  config: () => Config;
  store: () => Store;
}

const STATES: readonly DeviceState[] = ['discovered', 'pending', 'provisioned', 'rejected', 'revoked', 'decommissioned'];
const PROTOCOLS: readonly Protocol[] = ['mqtt', 'opcua'];

/** The token file made at the first start, for the first administrator. */
export const ADMIN_TOKEN_FILE = 'admin.token';

/**
 * The versioned local API (/api/v1). Every route is behind one guard: the
 * Host header must name this listener (no DNS rebinding), an address with
 * too many failed authentications waits, the bearer token must be valid,
 * and its user's role must hold the route's permission (PERMISSIONS in
 * auth.ts). Errors are JSON with a stable code. Health and metrics stay
 * outside the API.
 */
export class Api {
  /** 30 failed authentications a minute per address, then a wait: guessing a 256-bit token is hopeless anyway. */
  private readonly failures = new FailureLimiter(30, 60_000);

  constructor(
    private readonly http: HttpService,
    private readonly deps: ApiDeps,
  ) {
    http.route('GET', '/api/v1/devices', this.guard('devices.read', (req, res) => this.devices(req, res)));
    http.routePrefix('GET', '/api/v1/devices/', this.guard('devices.read', (req, res) => this.device(req, res)));
    http.route('GET', '/api/v1/sync/status', this.guard('sync.read', (_req, res) => this.syncStatus(res)));
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
    store.durable(() => {
      const admin = users.add('admin', 'admin', 'agent');
      users.addToken(admin.id, hashSecret(secret), 'first start', undefined);
    });
    if (!existsSync(file)) writeFileAtomic(file, `${secret}\n`, 0o600);
    this.deps.log.warn({ file }, 'first start: an admin token for the local API is in this file (readable by the agent user only); make your own users and delete it');
  }

  private hosts(): Set<string> {
    const { host, port } = this.deps.config().http;
    const names = ['localhost', '127.0.0.1', '[::1]', host.includes(':') ? `[${host}]` : host];
    return new Set(names.flatMap((n) => [n, `${n}:${this.http.address().port || port}`]).map((n) => n.toLowerCase()));
  }

  private guard(permission: Permission, handler: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>) {
    return async (req: IncomingMessage, res: ServerResponse) => {
      if (!this.hosts().has((req.headers.host ?? '').toLowerCase())) {
        return sendError(res, 421, 'HOST_NOT_ALLOWED', 'the Host header does not name this listener');
      }
      const address = req.socket.remoteAddress ?? '?';
      if (this.failures.blocked(address)) return sendError(res, 429, 'TOO_MANY_FAILURES', 'too many failed authentications from this address; wait a minute');
      const auth = authenticate(req.headers.authorization, new UserRepository(this.deps.store()));
      if (!auth.ok) {
        this.failures.fail(address);
        return sendError(res, 401, 'UNAUTHENTICATED', `no valid token (${auth.failure})`);
      }
      if (!allowed(auth.user.role, permission)) return sendError(res, 403, 'FORBIDDEN', `the ${auth.user.role} role may not do this (${permission})`);
      return handler(req, res);
    };
  }

  private devices(req: IncomingMessage, res: ServerResponse): void {
    const q = new URL(req.url ?? '/', 'http://local').searchParams;
    const state = q.get('state');
    const protocol = q.get('protocol');
    const limit = Number(q.get('limit') ?? 100);
    const offset = Number(q.get('offset') ?? 0);
    if (state !== null && !STATES.includes(state as DeviceState)) return sendError(res, 400, 'BAD_QUERY', `state must be one of ${STATES.join(', ')}`);
    if (protocol !== null && !PROTOCOLS.includes(protocol as Protocol)) return sendError(res, 400, 'BAD_QUERY', 'protocol must be mqtt or opcua');
    if (!Number.isInteger(limit) || limit < 1 || limit > 1_000) return sendError(res, 400, 'BAD_QUERY', 'limit must be a whole number from 1 to 1000');
    if (!Number.isInteger(offset) || offset < 0) return sendError(res, 400, 'BAD_QUERY', 'offset must be a whole number >= 0');
    const all = new DeviceRepository(this.deps.store()).list({ ...(state ? { state: state as DeviceState } : {}), ...(protocol ? { protocol: protocol as Protocol } : {}) });
    sendJson(res, 200, { total: all.length, items: all.slice(offset, offset + limit) });
  }

  private device(req: IncomingMessage, res: ServerResponse): void {
    const id = decodeURIComponent(new URL(req.url ?? '/', 'http://local').pathname.slice('/api/v1/devices/'.length));
    const devices = new DeviceRepository(this.deps.store());
    const device = devices.get(id);
    if (!device) return sendError(res, 404, 'NO_SUCH_DEVICE', `no device ${id}`);
    const push = device.protocol === 'opcua' ? new PushRepository(this.deps.store()).get(id) : undefined;
    sendJson(res, 200, { device, ...(push ? { push } : {}), history: devices.events(id) });
  }

  private syncStatus(res: ServerResponse): void {
    const repo = new SyncRepository(this.deps.store());
    sendJson(res, 200, {
      enabled: this.deps.config().sync.enabled,
      connected: repo.getState<boolean>(SYNC_STATE.connected) ?? false,
      paused: repo.getState<string>(SYNC_STATE.paused) ?? null,
      lastSuccess: repo.getState<string>(SYNC_STATE.lastSuccess) ?? null,
      lastError: repo.getState<string>(SYNC_STATE.lastError) ?? null,
      backlog: repo.outboxSize(),
      deadLetters: repo.deadLetterCount(),
    });
  }
}
