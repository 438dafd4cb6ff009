/**
 * The page's one way to the API: same-origin fetches that carry the console
 * cookie, the CSRF token on every change, and errors turned into ApiFailure
 * with the API's own message (which says what to do). A 401 anywhere means
 * the session is over: the page goes back to the sign-in view.
 */

export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken = '';
let unauthorized: () => void = () => {};

/** Who the page shows as signed in (`source:name`): a renewed CSRF token must be theirs. */
let signedInAs = '';

export function setCsrfToken(token: string, who = ''): void {
  csrfToken = token;
  signedInAs = who;
}

/** Called on a 401 from any call but the sign-in itself. */
export function onUnauthorized(handler: () => void): void {
  unauthorized = handler;
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

async function failure(res: Response): Promise<ApiFailure> {
  try {
    const body = (await res.json()) as { code?: string; message?: string };
    if (body && typeof body.message === 'string') return new ApiFailure(res.status, body.code ?? 'ERROR', body.message);
  } catch {
    // Not JSON: a proxy's page, or the connection cut. The status says enough.
  }
  return new ApiFailure(res.status, 'HTTP_' + res.status, `the gateway answered ${res.status} ${res.statusText}; try again, or check that the agent runs`);
}

/** Asks for the CSRF token of the cookie's sign-in again; false when there is no sign-in any more. */
async function refreshCsrf(): Promise<boolean> {
  try {
    const res = await fetch('/api/v1/console/session', { headers: { accept: 'application/json' }, credentials: 'same-origin' });
    if (!res.ok) return false;
    const body = (await res.json()) as { csrfToken?: string; principal?: { name?: string; source?: string } };
    if (typeof body.csrfToken !== 'string' || body.csrfToken === csrfToken) return false;
    // Someone else signed in from another tab meanwhile: their cookie is not this page's, and the change must not go as them.
    if (`${body.principal?.source}:${body.principal?.name}` !== signedInAs) return false;
    csrfToken = body.csrfToken;
    return true;
  } catch {
    return false;
  }
}

export async function request(method: Method, path: string, body?: unknown, opts: { signIn?: boolean; retried?: boolean } = {}): Promise<Response> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['x-csrf-token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch {
    throw new ApiFailure(0, 'NETWORK', 'the gateway did not answer: check the connection and that the agent runs, then try again');
  }
  if (res.ok) return res;
  const err = await failure(res);
  // The agent makes its CSRF key at each start: after a restart the page asks for this sign-in's token again, once, and retries.
  if (err.code === 'CSRF_FAILED' && !opts.retried && !opts.signIn && (await refreshCsrf())) return request(method, path, body, { ...opts, retried: true });
  if (res.status === 401 && !opts.signIn) unauthorized();
  throw err;
}

/** A JSON call; the answer typed as the caller expects it (the API's shapes are in types.ts). */
export async function api<T>(method: Method, path: string, body?: unknown, opts?: { signIn?: boolean }): Promise<T> {
  const res = await request(method, path, body, opts);
  return (await res.json()) as T;
}

export const get = <T>(path: string): Promise<T> => api<T>('GET', path);
export const post = <T>(path: string, body?: unknown): Promise<T> => api<T>('POST', path, body ?? {});

/** A query string from the fields that have a value ('' and undefined are left out). */
export function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? '?' + s : '';
}

export const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));
