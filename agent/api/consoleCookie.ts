import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { CONSOLE_SECRET, hashSecret } from './auth.js';

/**
 * The console's cookie: a secret of its own (console_sessions), standing for the API token or directory
 * session the person signed in with. Under TLS its name has the `__Host-` prefix: the browser then keeps
 * it to this host, Secure, Path=/, and no other service on the host name can set one in its place.
 */
export const COOKIE = 'edge_console';
export const TLS_COOKIE = `__Host-${COOKIE}`;
/** The header a state-changing request authenticated by the cookie must carry. */
export const CSRF_HEADER = 'x-csrf-token';

const UNSAFE = new Set(['POST', 'PUT', 'DELETE', 'PATCH']);

/**
 * The web console's cookie. It holds a console session's secret, which
 * stands for an API token or a directory session: it works only while that
 * credential does (no second authority), and no longer than its own
 * sign-out. It is HttpOnly (the page's script never
 * sees it), SameSite=Strict (another site's page cannot send it), Secure
 * under TLS, Path=/. A request it authenticates that changes anything must
 * also carry the CSRF token (an HMAC of the cookie secret's hash under a key
 * made at each start), which only a page of this origin can have read; and
 * when the browser says where the request comes from (Origin), that must be
 * this listener.
 */
export class ConsoleCookies {
  private readonly key = randomBytes(32);

  /** The secret the request's cookie carries, if it has a well-formed one. */
  secretOf(req: IncomingMessage): string | undefined {
    const header = req.headers.cookie;
    if (!header) return undefined;
    const name = cookieName(req);
    for (const part of header.split(';')) {
      const eq = part.indexOf('=');
      if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
      const value = part.slice(eq + 1).trim();
      return CONSOLE_SECRET.test(value) ? value : undefined;
    }
    return undefined;
  }

  /** The CSRF token of a credential: the page gets it when it signs in (and from GET /api/v1/console/session). */
  csrfFor(secret: string): string {
    return createHmac('sha256', this.key).update(hashSecret(secret)).digest('base64url');
  }

  /**
   * Why a request authenticated by `secret` (from the cookie) may not go on, or undefined when it may:
   * a read may; a change needs the CSRF header, and an Origin of this listener when one is given.
   */
  csrfRefusal(req: IncomingMessage, secret: string): string | undefined {
    if (!UNSAFE.has(req.method ?? 'GET')) return undefined;
    const origin = req.headers.origin;
    if (origin !== undefined) {
      let host: string | undefined;
      try {
        host = new URL(origin).host;
      } catch {
        host = undefined;
      }
      if (host === undefined || host !== req.headers.host) return 'the request comes from another origin than the console';
    }
    const given = req.headers[CSRF_HEADER];
    if (typeof given !== 'string' || given === '') return `the ${CSRF_HEADER} header is missing: reload the console page`;
    const want = Buffer.from(this.csrfFor(secret));
    const have = Buffer.from(given);
    if (have.length !== want.length || !timingSafeEqual(have, want)) return `the ${CSRF_HEADER} header does not match this sign-in: reload the console page`;
    return undefined;
  }

  /** Sets the cookie; it lives as long as the credential (a browser session when the credential has no end). */
  set(req: IncomingMessage, res: ServerResponse, secret: string, expiresAt?: Date): void {
    const maxAge = expiresAt ? `; Max-Age=${Math.max(0, Math.floor((expiresAt.getTime() - Date.now()) / 1000))}` : '';
    res.setHeader('set-cookie', `${cookieName(req)}=${secret}; Path=/; HttpOnly; SameSite=Strict${secure(req)}${maxAge}`);
  }

  /** Tells the browser to forget the cookie. */
  clear(req: IncomingMessage, res: ServerResponse): void {
    res.setHeader('set-cookie', `${cookieName(req)}=; Path=/; HttpOnly; SameSite=Strict${secure(req)}; Max-Age=0`);
  }
}

const tls = (req: IncomingMessage) => (req.socket as TLSSocket).encrypted === true;
const secure = (req: IncomingMessage) => (tls(req) ? '; Secure' : '');
const cookieName = (req: IncomingMessage) => (tls(req) ? TLS_COOKIE : COOKIE);
