import type { IncomingMessage, ServerResponse } from 'node:http';
import { z, type ZodType } from 'zod';
import { API_ERRORS, type ApiErrorCode } from '../errorTable.js';
import { AgentError, InternalError } from '../errors.js';
import type { AuditOutcome } from '../store/auditRepository.js';
import type { Permission } from './auth.js';
import type { Principal } from './principal.js';

/** Largest request body the API reads; a larger one is refused (413) before it is parsed. */
export const MAX_BODY_BYTES = 64 * 1024;

/**
 * An error the API answers with (`{ code, message }`): its code's row in
 * ERROR_TABLE gives the status. Routes throw it for what the client asked
 * that cannot be done (no such device, a body out of range); anything else a
 * route throws is answered 500 INTERNAL and logged.
 */
export class ApiError extends AgentError {
  constructor(
    readonly code: ApiErrorCode,
    message: string,
  ) {
    super(message);
  }

  get status(): number {
    return API_ERRORS[this.code].http;
  }
}

export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  /** Who is asking: a local user's token or a directory user's session (ANONYMOUS on a route open to anyone). */
  user: Principal;
  /** Path parameters, decoded ({id} in the route's path). */
  params: Record<string, string>;
  /** The query, already checked against the route's `query` spec. */
  query: Query;
  /** Reads and checks the JSON body against a strict schema: unknown fields are refused. */
  body<T>(schema: ZodType<T>): Promise<T>;
  /** For a route that takes no fields: an empty body or `{}`, anything else refused. */
  noBody(): Promise<void>;
  /** Runs a change and its audit entry in one durable (fsynced) transaction, before the answer leaves. */
  commit<T>(change: () => T): T;
  /** Writes an audit entry as this user (inside `commit` when it explains a change). */
  audit(action: string, target: string, outcome: AuditOutcome, details?: Record<string, unknown>): void;
}

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Such as /api/v1/devices/{id}/approve. */
  path: string;
  /** `anyone`: the route takes no token (the login); every other route needs one whose holder has the permission. */
  permission: Permission | 'anyone';
  /** One line saying what the route does. */
  summary: string;
  /** The query parameters it takes (none when absent): any other is refused with 400 BAD_QUERY. */
  query?: QuerySpec;
  /**
   * Returns the JSON answer (status 200, or `status` when given): `body` to be written as JSON, or `json`, its text
   * already written; a stream answers on `res` itself and returns undefined.
   */
  handle(ctx: RouteContext): Promise<Answer | undefined> | Answer | undefined;
}

export type Answer = { status?: number; body: unknown } | { status?: number; json: string };

/** Matches a path against the routes: the route and its parameters, or which methods the path has. */
export function match(
  routes: readonly Route[],
  method: string,
  path: string,
): { route: Route; params: Record<string, string> } | { allow: string[] } | undefined {
  const segments = path.split('/');
  const allow: string[] = [];
  for (const route of routes) {
    const pattern = route.path.split('/');
    if (pattern.length !== segments.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < pattern.length && ok; i++) {
      const p = pattern[i]!;
      if (p.startsWith('{') && p.endsWith('}')) {
        let value: string;
        try {
          value = decodeURIComponent(segments[i]!);
        } catch {
          ok = false;
          break;
        }
        if (value === '') ok = false;
        params[p.slice(1, -1)] = value;
      } else if (p !== segments[i]) ok = false;
    }
    if (!ok) continue;
    if (route.method === method) return { route, params };
    allow.push(route.method);
  }
  return allow.length > 0 ? { allow } : undefined;
}

/** Reads a request body up to MAX_BODY_BYTES; a longer one is refused as soon as it passes the cap. */
export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) throw new ApiError('BODY_TOO_LARGE', `the request body may have ${MAX_BODY_BYTES} bytes at most`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new ApiError('BODY_TOO_LARGE', `the request body may have ${MAX_BODY_BYTES} bytes at most`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The body as JSON checked against `schema` (an empty body is `{}`). */
export async function jsonBody<T>(req: IncomingMessage, schema: ZodType<T>): Promise<T> {
  const raw = await readBody(req);
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  let value: unknown = {};
  if (raw.length > 0) {
    if (type !== 'application/json') throw new ApiError('UNSUPPORTED_MEDIA_TYPE', 'send the body as application/json');
    try {
      value = JSON.parse(raw.toString('utf8'));
    } catch {
      throw new ApiError('BAD_JSON', 'the body is not valid JSON');
    }
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`);
    throw new ApiError('BAD_REQUEST', problems.join('; '));
  }
  return parsed.data;
}

/** One query parameter a route takes: a whole number within bounds (with a default), one of a list, or free text. */
export type QueryParam =
  | { kind: 'int'; min: number; max: number; default: number }
  | { kind: 'enum'; values: readonly string[] }
  | { kind: 'text'; max: number; what: string };

/** The query parameters of a route, by name: the one source for the router's check, docs/api.md and its test. */
export type QuerySpec = Readonly<Record<string, QueryParam>>;

/** `offset` has no useful upper bound. */
const NO_MAX = Number.MAX_SAFE_INTEGER;

/** `limit` and `offset` of a list: every list answers `{ total, items }`. */
export function paged(defaultLimit = 100, maxLimit = 1_000): QuerySpec {
  return { limit: { kind: 'int', min: 1, max: maxLimit, default: defaultLimit }, offset: { kind: 'int', min: 0, max: NO_MAX, default: 0 } };
}

/** A request's query, checked against its route's spec: numbers parsed, defaults applied. */
export class Query {
  constructor(
    private readonly spec: QuerySpec,
    private readonly values: ReadonlyMap<string, string | number>,
  ) {}

  int(name: string): number {
    const p = this.spec[name];
    if (p?.kind !== 'int') throw new InternalError(`query parameter ${name} is not a declared number`);
    return (this.values.get(name) as number | undefined) ?? p.default;
  }

  text(name: string): string | undefined {
    const p = this.spec[name];
    if (!p || p.kind === 'int') throw new InternalError(`query parameter ${name} is not declared as text`);
    return this.values.get(name) as string | undefined;
  }
}

/** Checks a query against a spec: an unknown name, a name given twice or a bad value is 400 BAD_QUERY. */
export function parseQuery(spec: QuerySpec = {}, params: URLSearchParams): Query {
  const names = Object.keys(spec);
  const values = new Map<string, string | number>();
  for (const [name, raw] of params) {
    const p = spec[name];
    if (!p) throw new ApiError('BAD_QUERY', `unknown query parameter ${JSON.stringify(name)}; allowed: ${names.join(', ') || 'none'}`);
    if (values.has(name)) throw new ApiError('BAD_QUERY', `${name} is given twice`);
    if (p.kind === 'int') {
      const n = Number(raw);
      if (!/^\d{1,16}$/.test(raw) || n < p.min || n > p.max)
        throw new ApiError('BAD_QUERY', `${name} must be a whole number ${p.max === NO_MAX ? `of ${p.min} or more` : `from ${p.min} to ${p.max}`}`);
      values.set(name, n);
    } else if (p.kind === 'enum') {
      if (!p.values.includes(raw)) throw new ApiError('BAD_QUERY', `${name} must be one of ${p.values.join(', ')}`);
      values.set(name, raw);
    } else {
      if (raw === '' || raw.length > p.max) throw new ApiError('BAD_QUERY', `${name} takes 1 to ${p.max} characters`);
      values.set(name, raw);
    }
  }
  return new Query(spec, values);
}

/** The query column of docs/api.md's route table, written from the spec (its test compares the two). */
export function describeQuery(spec: QuerySpec = {}): string {
  const parts = Object.entries(spec).map(([name, p]) => {
    if (p.kind === 'int') return `\`${name}\`: ${p.max === NO_MAX ? `${p.min} or more` : `${p.min}–${p.max}`} (default ${p.default})`;
    if (p.kind === 'enum') return `\`${name}\`: ${p.values.map((v) => `\`${v}\``).join(' \\| ')}`;
    return `\`${name}\`: ${p.what}`;
  });
  return parts.length === 0 ? '—' : parts.join('; ');
}

/** Free text from a technician: printable, bounded. */
export const text = (max: number) =>
  z
    .string()
    .max(max)
    .refine((v) => !/[\u0000-\u001f\u007f]/.test(v), 'must not hold control characters');
