import { isIP, type Socket } from 'node:net';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { Client, EqualityFilter, type Filter, FilterParser, InvalidCredentialsError, ResultCodeError } from 'ldapts';
import { DirectoryError, type DirectoryRefusal } from '../errors.js';

export { escapeFilterValue, guidFilter, parseGuidHex } from './ldapFilter.js';

/** One entry of a search, in the agent's types: attribute names in lower case, every value a string (objectGUID as 32 hex digits). */
export interface LdapEntry {
  dn: string;
  attributes: Record<string, string[]>;
}

export interface LdapOptions {
  /** PEM of the CA(s) the directory's certificate must chain to: the only ones trusted. */
  caPem: string;
  /** TCP connect and TLS handshake (StartTLS included). */
  connectTimeoutMs: number;
  /** Each operation (bind, search, the StartTLS request). */
  timeoutMs: number;
}

/** AD's reason for a failed bind, the "data 52e" of its diagnostic message (MS-ADTS; the same values as Windows' logon errors). */
const REFUSALS: Record<string, DirectoryRefusal> = {
  '52e': 'bad-credentials',
  '525': 'no-such-user',
  // Logon hours (530) and workstation (531) restrictions: the account may not log in now or here; no closer refusal exists.
  '530': 'disabled',
  '531': 'disabled',
  '533': 'disabled',
  '701': 'expired',
  '532': 'password-expired',
  '773': 'password-expired',
  '775': 'locked',
};

/** The refusal an AD bind diagnostic ("80090308: LdapErr: ..., data 52e, v1db1") names; bad-credentials when it names none known. */
export function refusalOf(diagnostic: string): DirectoryRefusal {
  const data = /\bdata ([0-9a-f]+)\b/i.exec(diagnostic)?.[1]?.toLowerCase();
  return (data && REFUSALS[data]) || 'bad-credentials';
}

/** Node's codes for a certificate the TLS layer would not accept: untrusted, wrong name, expired. */
const CERT_CODE = /CERT|ISSUER|SIGNATURE|INVALID_CA|INVALID_PURPOSE|ALTNAME|SELF_SIGNED/;

/** Any failure of the library or the socket, as the agent's error: decided by codes and classes, the message only for the timeout ldapts raises without one. */
export function directoryErrorOf(err: unknown, url: string, options: LdapOptions, what: string): DirectoryError {
  if (err instanceof DirectoryError) return err;
  if (err instanceof InvalidCredentialsError)
    return new DirectoryError('LOGIN_FAILED', `${url} refused the ${what}`, { cause: err, refusal: refusalOf(err.message) });
  if (err instanceof ResultCodeError)
    return new DirectoryError('DIRECTORY_UNAVAILABLE', `${url} answered the ${what} with LDAP result ${err.code}: ${err.message}`, { cause: err });
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && CERT_CODE.test(code))
    return new DirectoryError('DIRECTORY_CERTIFICATE', `the certificate of ${url} is not accepted (${code}): ${(err as Error).message}`, { cause: err });
  const message = err instanceof Error ? err.message : String(err);
  if (/timed? ?out/i.test(message) && code === undefined)
    return new DirectoryError(
      'DIRECTORY_UNAVAILABLE',
      `${url} did not answer the ${what} within ${what === 'connection' ? options.connectTimeoutMs : options.timeoutMs} ms`,
      { cause: err },
    );
  return new DirectoryError('DIRECTORY_UNAVAILABLE', `${url} cannot be used for the ${what}: ${code ?? message}`, { cause: err });
}

/**
 * A filter string as ldapts filter objects whose values are the bytes the
 * string's escapes say. ldapts' own parser turns "\\d0\\b0" into the two
 * characters U+00D0 U+00B0 and sends them UTF-8 encoded (four bytes): a
 * non-ASCII name or DN, or a binary objectGUID, would never match. So every
 * non-ASCII character is escaped first (they can only be in values), each
 * parsed value is taken as the bytes it holds, and sent as such: equality
 * values as raw octets (objectGUID is binary), the others (DNs in
 * extensible matches) as the UTF-8 text those bytes are.
 */
export function filterOf(filter: string): Filter {
  const escaped = filter.replace(/[^\u0000-\u007f]+/gu, (text) => escapeNonAscii(text));
  const root = FilterParser.parseString(escaped);
  const fix = (node: Filter): void => {
    const n = node as Filter & { filters?: Filter[]; filter?: Filter; value?: unknown; initial?: unknown; final?: unknown; any?: unknown };
    for (const child of n.filters ?? []) fix(child);
    if (n.filter) fix(n.filter);
    const bytes = (v: unknown) => Buffer.from(String(v), 'latin1');
    if (typeof n.value === 'string') n.value = node instanceof EqualityFilter ? bytes(n.value) : bytes(n.value).toString('utf8');
    if (typeof n.initial === 'string') n.initial = bytes(n.initial).toString('utf8');
    if (typeof n.final === 'string') n.final = bytes(n.final).toString('utf8');
    if (Array.isArray(n.any)) n.any = n.any.map((v) => bytes(v).toString('utf8'));
  };
  fix(root);
  return root;
}

const escapeNonAscii = (text: string) => [...Buffer.from(text, 'utf8')].map((b) => `\\${b.toString(16).padStart(2, '0')}`).join('');

const hostOf = (url: URL) => url.hostname.replace(/^\[(.*)\]$/, '$1');

/**
 * One connection to a directory, always encrypted: ldaps://, or ldap://
 * upgraded by StartTLS before anything else is sent. The certificate must
 * chain to the configured CA and name the URL's host (an IP address host
 * needs an IP SAN). The connection is never reopened behind the caller's
 * back: ldapts reconnects silently when its socket closed, and on ldap://
 * that reconnect would carry the next bind in the clear, so a second
 * socket is refused and the operation fails DIRECTORY_UNAVAILABLE instead.
 */
export class LdapConnection {
  private constructor(
    private readonly client: Client,
    private readonly url: string,
    private readonly options: LdapOptions,
    private readonly sockets: Socket[],
  ) {}

  /** Connects (and on ldap://, StartTLS): DIRECTORY_UNAVAILABLE, or DIRECTORY_CERTIFICATE when the certificate is refused. */
  static async open(url: string, options: LdapOptions): Promise<LdapConnection> {
    const parsed = new URL(url);
    const host = hostOf(parsed);
    const secure = parsed.protocol === 'ldaps:';
    if (!secure && parsed.protocol !== 'ldap:') throw new DirectoryError('DIRECTORY_UNAVAILABLE', `${url} is neither ldaps:// nor ldap://`);
    const tlsOptions: tls.ConnectionOptions = {
      ca: options.caPem,
      minVersion: 'TLSv1.2',
      rejectUnauthorized: true,
      host,
      // SNI takes a name only; for an address Node checks the IP SAN against `host`.
      ...(isIP(host) ? {} : { servername: host }),
    };
    const sockets: Socket[] = [];
    const once = <T extends Socket>(make: () => T): T => {
      if (sockets.length > 0) throw new DirectoryError('DIRECTORY_UNAVAILABLE', `the connection to ${url} was closed`);
      const socket = make();
      sockets.push(socket);
      return socket;
    };
    const client = new Client({
      url: `${parsed.protocol}//${parsed.host}`,
      connectTimeout: options.connectTimeoutMs,
      timeout: options.timeoutMs,
      // ldapts takes any tlsOptions as "connect with TLS", on port 389 too: an ldap:// URL gets them at its StartTLS only.
      ...(secure ? { tlsOptions } : {}),
      createConnection: ((port: number, h: string) => once(() => net.connect(port, h))) as typeof net.connect,
      // The ldaps:// connect (port, host, options) and the StartTLS upgrade (options with the plain socket).
      createSecureConnection: ((...args: unknown[]) => {
        if (typeof args[0] === 'object') {
          const upgrade = tls.connect(args[0] as tls.ConnectionOptions);
          sockets.push(upgrade);
          return upgrade;
        }
        return once(() => tls.connect(args[0] as number, args[1] as string, args[2] as tls.ConnectionOptions));
      }) as typeof tls.connect,
    });
    const connection = new LdapConnection(client, url, options, sockets);
    if (!secure) {
      try {
        await connection.bounded(client.startTLS({ ...tlsOptions }), options.connectTimeoutMs + options.timeoutMs, 'StartTLS');
      } catch (err) {
        connection.destroy();
        if (err instanceof ResultCodeError)
          throw new DirectoryError('DIRECTORY_UNAVAILABLE', `${url} refused StartTLS (LDAP result ${err.code}): plain LDAP binds are never made`, {
            cause: err,
          });
        throw directoryErrorOf(err, url, options, 'StartTLS');
      }
    } else {
      try {
        // ldapts connects lazily and has no public connect; connecting here makes a refused certificate
        // the open's failure, not the first bind's (where it would be mapped the same way).
        const lazy = client as unknown as { _connect?: () => Promise<void> };
        if (typeof lazy._connect === 'function') await lazy._connect.call(client);
      } catch (err) {
        connection.destroy();
        throw directoryErrorOf(err, url, options, 'connection');
      }
    }
    return connection;
  }

  /** A simple bind. An empty password is refused here: AD takes it as an unauthenticated bind, which succeeds. */
  async bind(dnOrUpn: string, password: string): Promise<void> {
    if (password === '') throw new DirectoryError('LOGIN_FAILED', 'an empty password is never sent to the directory', { refusal: 'bad-credentials' });
    this.assertOpen('bind');
    try {
      await this.client.bind(dnOrUpn, password);
    } catch (err) {
      throw directoryErrorOf(err, this.url, this.options, 'bind');
    }
  }

  /** Entries under `base` matching `filter` (a filter string whose values the caller escaped); at most `sizeLimit` of them. */
  async search(
    base: string,
    filter: string,
    attributes: readonly string[],
    options: { scope?: 'base' | 'one' | 'sub'; sizeLimit?: number } = {},
  ): Promise<LdapEntry[]> {
    this.assertOpen('search');
    try {
      const { searchEntries } = await this.client.search(base, {
        scope: options.scope ?? 'sub',
        filter: filterOf(filter),
        attributes: [...attributes],
        explicitBufferAttributes: ['objectGUID'],
        ...(options.sizeLimit === undefined ? {} : { sizeLimit: options.sizeLimit }),
        timeLimit: Math.max(1, Math.ceil(this.options.timeoutMs / 1000)),
      });
      return searchEntries.map((entry) => {
        const out: Record<string, string[]> = {};
        for (const [name, value] of Object.entries(entry)) {
          if (name === 'dn') continue;
          const values = Array.isArray(value) ? value : [value];
          out[name.toLowerCase()] = values.map((v) => (Buffer.isBuffer(v) ? v.toString('hex') : String(v)));
        }
        return { dn: entry.dn, attributes: out };
      });
    } catch (err) {
      throw directoryErrorOf(err, this.url, this.options, 'search');
    }
  }

  /** Unbinds and closes; never throws (the connection is done with either way). */
  async close(): Promise<void> {
    try {
      if (this.client.isConnected) await this.bounded(this.client.unbind(), this.options.timeoutMs, 'unbind');
    } catch {
      // Closing a connection that failed: the socket is destroyed below, nothing else to do.
    } finally {
      this.destroy();
    }
  }

  private destroy(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  private assertOpen(what: string): void {
    if (this.sockets.length > 0 && !this.client.isConnected)
      throw new DirectoryError('DIRECTORY_UNAVAILABLE', `the connection to ${this.url} was closed before the ${what}`);
  }

  /** `promise`, or DIRECTORY_UNAVAILABLE after `ms`: the StartTLS handshake has no timeout of its own in ldapts. */
  private async bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        promise,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            this.destroy();
            reject(new DirectoryError('DIRECTORY_UNAVAILABLE', `${this.url} did not complete the ${what} within ${ms} ms`));
          }, ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}
