import { existsSync, readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { ADMIN_TOKEN_FILE, API_URL_FILE } from '../api/auth.js';
import { apiEndpoint, apiUrl } from '../api/listener.js';
import type { Config } from '../config/schema.js';
import { AgentError, UsageError } from '../errors.js';
import { readSessionFile, sessionFilePath } from './sessionFile.js';

/**
 * The daemon's API could not be reached. `sent` is false when nothing was
 * delivered (connection refused: the daemon is not running): only then may
 * a command fall back to the database.
 */
export class DaemonUnavailableError extends AgentError {
  readonly code = 'DAEMON_UNAVAILABLE' as const;
  constructor(
    message: string,
    readonly sent: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** No token to call the API with. */
export class NoTokenError extends AgentError {
  readonly code = 'NO_TOKEN' as const;
}

/** The API answered with an error: its status and stable code. */
export class ApiAnswerError extends AgentError {
  constructor(
    readonly status: number,
    readonly apiCode: string,
    message: string,
  ) {
    super(message);
  }
  readonly code = 'API_ERROR' as const;
}

export interface ClientOptions {
  token?: string;
  tokenFile?: string;
  /** PEM file of the CA chain to trust with TLS (default: the gateway CA's own files, or $EDGE_AGENT_CA). */
  ca?: string;
}

/** Where a command's credential came from (whoami says it). */
export type CredentialSource = '--token' | 'EDGE_AGENT_TOKEN' | 'token file' | 'session file' | 'admin.token';

export interface Credential {
  token: string;
  source: CredentialSource;
  /** The file it was read from (token file, session file, admin.token). */
  file?: string;
  /** From the session file: when the session ends. */
  expiresAt?: string;
}

/**
 * The credential a command uses: --token, else $EDGE_AGENT_TOKEN, else the
 * file --token-file or $EDGE_AGENT_TOKEN_FILE names, else the session of
 * `edge-agent login` (kept only for the API url it was made against, while
 * it lasts, and from a file only this user can read), else
 * <dataDir>/admin.token when this user can read it (the first
 * administrator's, on the gateway). `url` is the API the command calls;
 * `warn` gets why a session file was passed over.
 */
export function resolveCredential(
  config: Config,
  o: ClientOptions,
  url: string,
  env: NodeJS.ProcessEnv = process.env,
  warn: (line: string) => void = (line) => process.stderr.write(`edge-agent: ${line}\n`),
  now: Date = new Date(),
): Credential {
  if (o.token) return { token: o.token.trim(), source: '--token' };
  if (env.EDGE_AGENT_TOKEN) return { token: env.EDGE_AGENT_TOKEN.trim(), source: 'EDGE_AGENT_TOKEN' };
  const explicit = o.tokenFile ?? env.EDGE_AGENT_TOKEN_FILE;
  if (explicit) {
    try {
      return { token: readFileSync(explicit, 'utf8').trim(), source: 'token file', file: explicit };
    } catch (err) {
      throw new NoTokenError(`cannot read the token file ${explicit}: ${(err as Error).message}`);
    }
  }
  const sessionFile = sessionFilePath(env);
  const read = readSessionFile(sessionFile);
  if (read.state === 'refused') warn(`ignoring the session file ${sessionFile}: ${read.why}`);
  if (read.state === 'ok' && read.session.url === url) {
    if (Date.parse(read.session.expiresAt) > now.getTime()) {
      return { token: read.session.token, source: 'session file', file: sessionFile, expiresAt: read.session.expiresAt };
    }
    warn(`the session of ${read.session.user} ended at ${read.session.expiresAt}: edge-agent login to start another`);
  }
  const adminToken = join(config.agent.dataDir, ADMIN_TOKEN_FILE);
  try {
    return { token: readFileSync(adminToken, 'utf8').trim(), source: 'admin.token', file: adminToken };
  } catch {
    throw new NoTokenError(
      'no API token: log in with edge-agent login (directory users), give --token, set EDGE_AGENT_TOKEN, or --token-file ' +
        '(an administrator makes one with edge-agent tokens create --user NAME)',
    );
  }
}

/** The token of resolveCredential (the url decides whether a login session applies). */
export function resolveToken(config: Config, o: ClientOptions, url: string, env: NodeJS.ProcessEnv = process.env): string {
  return resolveCredential(config, o, url, env).token;
}

const SESSION_HINT = '; the session of edge-agent login has ended (expired, logged out, or the user lost access): edge-agent login again';

const FIRST_START_HINT =
  '; that is the token in admin.token, which ends 24 hours after the first start, when the file is deleted or when an administrator token is made: ' +
  'give your own (--token, EDGE_AGENT_TOKEN), or make one on the gateway with sudo -u edge-agent edge-agent tokens create --user NAME --local';

/** A client of the running daemon's local API. */
export class ApiClient {
  /**
   * Without a token the client still calls (with no Authorization header):
   * a daemon that is down is then told apart from a missing token, which
   * `tokenError` explains when the API answers 401.
   */
  private constructor(
    /** The API's base url (a login session is kept for it). */
    readonly url: string,
    private readonly ca: string | undefined,
    /** What the client calls with, and where it came from; undefined: no Authorization header. */
    readonly credential: Credential | undefined,
    private readonly tokenError: NoTokenError | undefined,
  ) {}

  /**
   * A client for the configured daemon. `credential`: undefined resolves it
   * (resolveCredential); null calls without any (edge-agent login); a
   * credential is used as given (logout sends the session's own token).
   */
  static for(config: Config, o: ClientOptions, env: NodeJS.ProcessEnv = process.env, credential?: Credential | null): ApiClient {
    const caFile = o.ca ?? env.EDGE_AGENT_CA;
    let endpoint: { url: string; ca?: string };
    try {
      endpoint = caFile ? { url: apiUrl(config) } : apiEndpoint(config);
    } catch (err) {
      throw new UsageError(
        `cannot read the gateway CA chain to trust the API's certificate (${(err as Error).message}); ` +
          'give it with --ca FILE or EDGE_AGENT_CA (GET /ca/chain, docs/api.md#tls)',
        { cause: err },
      );
    }
    let url = endpoint.url;
    // With http.port 0 the daemon writes the port it got (a user who cannot read the data directory needs a fixed http.port).
    const file = join(config.agent.dataDir, API_URL_FILE);
    if (config.http.port === 0 && existsSync(file)) {
      try {
        url = readFileSync(file, 'utf8').trim();
      } catch {
        // Unreadable: the configured address stands.
      }
    }
    let ca = endpoint.ca;
    if (caFile && config.http.tls.enabled) {
      try {
        ca = readFileSync(caFile, 'utf8');
      } catch (err) {
        throw new UsageError(`cannot read the CA chain ${caFile} (--ca, EDGE_AGENT_CA): ${(err as Error).message}`, { cause: err });
      }
    }
    if (credential !== undefined) return new ApiClient(url, ca, credential ?? undefined, undefined);
    try {
      // After the url: a login session is used only against the API it was made for.
      return new ApiClient(url, ca, resolveCredential(config, o, url, env), undefined);
    } catch (err) {
      if (!(err instanceof NoTokenError)) throw err;
      return new ApiClient(url, ca, undefined, err);
    }
  }

  /** What a 401 adds: how to get a credential that works, for the ones the user did not choose by hand. */
  private refusedHint(): string {
    if (this.credential?.source === 'admin.token') return FIRST_START_HINT;
    if (this.credential?.source === 'session file') return SESSION_HINT;
    return '';
  }

  private open(method: string, path: string, body: unknown, accept: string): Promise<IncomingMessage> {
    const target = new URL(path, this.url);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(
        target,
        {
          method,
          ...(this.ca ? { ca: this.ca } : {}),
          headers: {
            ...(this.credential ? { authorization: `Bearer ${this.credential.token}` } : {}),
            accept,
            ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
          },
        },
        resolve,
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ECONNREFUSED') {
          reject(new DaemonUnavailableError(`the daemon is not running (nothing answers at ${this.url})`, false, { cause: err }));
        } else {
          // Sent, or perhaps sent: whether it was carried out is unknown, so no command repeats it on the database.
          reject(
            new DaemonUnavailableError(
              `the daemon at ${this.url} did not answer (${err.code ?? err.message}); check whether it was done before trying again`,
              true,
              { cause: err },
            ),
          );
        }
      });
      req.end(payload);
    });
  }

  /** One JSON request; an error answer throws ApiAnswerError. */
  async call<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const res = await this.open(method, path, body ?? (method === 'GET' || method === 'DELETE' ? undefined : {}), 'application/json');
    let text = '';
    for await (const chunk of res as AsyncIterable<Buffer>) text += chunk.toString('utf8');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new ApiAnswerError(res.statusCode ?? 0, 'NOT_JSON', `the agent answered ${res.statusCode} without JSON`);
    }
    const status = res.statusCode ?? 0;
    if (status === 401 && this.tokenError) throw this.tokenError;
    if (status >= 400) {
      const e = parsed as { code?: string; message?: string };
      throw new ApiAnswerError(status, e.code ?? 'UNKNOWN', `${e.message ?? `status ${status}`}${status === 401 ? this.refusedHint() : ''}`);
    }
    return { status, body: parsed as T };
  }

  /** Follows a Server-Sent Events stream until the server ends it; each event goes to `onEvent` in order. */
  async events(path: string, onEvent: (event: string, data: unknown, id: number) => void, signal?: AbortSignal): Promise<void> {
    const res = await this.open('GET', path, undefined, 'text/event-stream');
    if (res.statusCode === 401 && this.tokenError) throw this.tokenError;
    if ((res.statusCode ?? 0) >= 400) {
      let text = '';
      for await (const chunk of res as AsyncIterable<Buffer>) text += chunk.toString('utf8');
      let e: { code?: string; message?: string } = {};
      try {
        e = JSON.parse(text) as typeof e;
      } catch {
        // Not JSON: the status says enough.
      }
      throw new ApiAnswerError(res.statusCode ?? 0, e.code ?? 'UNKNOWN', e.message ?? `status ${res.statusCode}`);
    }
    signal?.addEventListener('abort', () => res.destroy(), { once: true });
    let buffer = '';
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        buffer += chunk.toString('utf8');
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = 'message';
          let id = 0;
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('id: ')) id = Number(line.slice(4));
            else if (line.startsWith('data: ')) data.push(line.slice(6));
          }
          if (data.length > 0) onEvent(event, JSON.parse(data.join('\n')), id);
        }
      }
    } catch (err) {
      if (!signal?.aborted) throw err;
    }
  }
}
