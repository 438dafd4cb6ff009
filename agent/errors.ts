import { CertError } from '../certs/errors.js';
import { API_ERRORS, ERROR_TABLE, ExitCode, type ApiErrorCode, type ErrorCode, type ErrorRow } from './errorTable.js';

// The exit codes are defined beside the table that maps codes to them; most commands import them from here.
export { ExitCode } from './errorTable.js';

/**
 * Errors the agent decides on. Every class carries a stable `code` literal
 * from ERROR_TABLE (errorTable.ts: its HTTP status and exit code); callers
 * branch on `code`, never on message text. Details go in `details` (logged
 * as fields), the underlying error in `cause`.
 */
export abstract class AgentError extends Error {
  abstract readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.details = options.details ?? {};
  }
}

/** One problem found in the configuration: where it is, what is wrong, what to do. */
export interface ConfigProblem {
  /** YAML path such as `store.busyTimeoutMs`, or `env EDGE_AGENT_HTTP_PORT`, or the file itself. */
  path: string;
  message: string;
  hint?: string;
  /** 1-based line in the YAML file, when the problem is in the file. */
  line?: number;
}

export class ConfigError extends AgentError {
  readonly code = 'CONFIG_INVALID' as const;
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
  ) {
    super(`configuration ${file} has ${problems.length} problem${problems.length === 1 ? '' : 's'}`);
  }

  /** Every problem on its own line, for a terminal or the journal. */
  describe(): string {
    const lines = this.problems.map((p) => {
      const where = p.line === undefined ? p.path : `${p.path} (line ${p.line})`;
      return `  - ${where}: ${p.message}${p.hint ? `\n      hint: ${p.hint}` : ''}`;
    });
    return `${this.message}:\n${lines.join('\n')}`;
  }
}

export class StoreCorruptError extends AgentError {
  readonly code = 'STORE_CORRUPT' as const;
}

export class StoreTooNewError extends AgentError {
  readonly code = 'STORE_TOO_NEW' as const;
}

export class StoreOpenError extends AgentError {
  readonly code = 'STORE_OPEN_FAILED' as const;
}

/** A command that works on an existing database found none at the configured path (it never creates one). */
export class StoreMissingError extends AgentError {
  readonly code = 'STORE_MISSING' as const;
}

/** This user may not read the database, or SQLite may not create its shared-memory file beside it. */
export class StoreAccessError extends AgentError {
  readonly code = 'STORE_ACCESS_DENIED' as const;
}

/** A read found a database of an older schema: only the daemon (or a change) migrates it, never a read. */
export class StoreNotMigratedError extends AgentError {
  readonly code = 'STORE_NOT_MIGRATED' as const;
}

export class ServiceStartError extends AgentError {
  readonly code = 'SERVICE_START_FAILED' as const;
}

export class TimeoutError extends AgentError {
  readonly code = 'TIMEOUT' as const;
}

export class UsageError extends AgentError {
  readonly code = 'USAGE' as const;
}

/**
 * A file the configuration names that cannot be used (a manufacturer CA
 * bundle that is missing or holds no CA): a configuration problem found at
 * start, so the exit code says a restart will not help.
 */
export class ConfigFileError extends AgentError {
  readonly code = 'CONFIG_FILE_UNUSABLE' as const;
}

/** A request the agent understood and declined (approving a device with nothing to approve, say). */
export class RefusedError extends AgentError {
  readonly code = 'REFUSED' as const;
}

/** A broken invariant inside the agent: a bug, or a part used before its start. The API answers it 500 INTERNAL. */
export class InternalError extends AgentError {
  readonly code = 'INTERNAL' as const;
}

/** The HTTP listener cannot bind its address (in use, not on this host). */
export class ListenError extends AgentError {
  readonly code = 'LISTEN_FAILED' as const;
}

/** An address range (opcua.scan.ranges, a discovery target) that is not an IPv4 address or CIDR range, or holds too many addresses. */
export class AddressRangeError extends AgentError {
  readonly code = 'RANGE_INVALID' as const;
}

/**
 * A peer on the network answered in a way the agent cannot use, or is not
 * there: the MQTT broker, an OPC UA server, the upstream receiver, the
 * Mosquitto process. The code says which.
 */
export class PeerError extends AgentError {
  constructor(
    readonly code: 'BROKER_UNAVAILABLE' | 'OPCUA_SERVER_ERROR' | 'UPSTREAM_ANSWER_INVALID' | 'MOSQUITTO_RELOAD_FAILED',
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, options);
  }
}

/**
 * Why the directory refused a login, from AD's diagnostic ("data 52e" and
 * the like). The same union as LoginRefusal in agent/directory/types.ts,
 * spelled here because transport/ (which reads it off the wire) may not
 * import a feature layer.
 */
export type DirectoryRefusal = 'bad-credentials' | 'no-such-user' | 'ambiguous' | 'disabled' | 'expired' | 'locked' | 'password-expired';

/**
 * The directory (Active Directory over LDAPS or StartTLS) could not be used
 * or refused a login. The code says which: DIRECTORY_UNAVAILABLE (cannot
 * connect, timed out, busy), DIRECTORY_CERTIFICATE (TLS refused: untrusted
 * chain or wrong name) or LOGIN_FAILED, then with `refusal` set.
 */
export class DirectoryError extends AgentError {
  /** Set for LOGIN_FAILED: what a client may be told. */
  readonly refusal: DirectoryRefusal | undefined;

  constructor(
    readonly code: 'LOGIN_FAILED' | 'DIRECTORY_UNAVAILABLE' | 'DIRECTORY_CERTIFICATE',
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown>; refusal?: DirectoryRefusal } = {},
  ) {
    super(message, options);
    this.refusal = options.refusal;
  }
}

export class BackupError extends AgentError {
  readonly code = 'BACKUP_FAILED' as const;
}

/** The table's code of a thrown value: an AgentError's or a CertError's; undefined for anything else (a bug, a library's error). */
export function codeOf(err: unknown): ErrorCode | undefined {
  return err instanceof AgentError || err instanceof CertError ? err.code : undefined;
}

export const httpStatusOf = (code: ErrorCode): number => ERROR_TABLE[code].http;

/** The exit code of a command that `err` ends: its code's row; 1 for an error without one. */
export function commandExitCode(err: unknown): number {
  const code = codeOf(err);
  return code === undefined ? ExitCode.failure : ERROR_TABLE[code].exit;
}

/**
 * The daemon's exit code when `err` stopped its start: that of the failed
 * service's cause (ServiceStartError wraps it), by its row's `startExit`
 * where a restart will not help.
 */
export function exitCodeFor(err: unknown): number {
  const root = err instanceof ServiceStartError && err.cause !== undefined ? err.cause : err;
  const code = codeOf(root);
  if (code === undefined) return ExitCode.failure;
  const row: ErrorRow = ERROR_TABLE[code];
  return row.startExit ?? row.exit;
}

/** The exit code of each status the API answers with (rows of one status share it; errorTable's test checks). */
const EXIT_BY_STATUS = new Map<number, number>(Object.values(API_ERRORS).map((r: ErrorRow) => [r.http, r.exit]));

/**
 * The exit code of a command the API answered with an error: its code's
 * row; for a code this build does not know (another version's, a proxy's
 * page), its status; else 1.
 */
export function exitForAnswer(status: number, code: string): number {
  const row: ErrorRow | undefined = Object.hasOwn(API_ERRORS, code) ? API_ERRORS[code as ApiErrorCode] : undefined;
  if (row && row.http === status) return row.exit;
  return EXIT_BY_STATUS.get(status) ?? ExitCode.failure;
}

/** A one-line description of any thrown value, including its cause chain. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  for (let depth = 0; current !== undefined && current !== null && depth < 5; depth++) {
    if (current instanceof Error) {
      // A message that already quotes its cause is not repeated.
      const message = current.message;
      if (!parts.some((p) => p.includes(message))) parts.push(message);
      current = current.cause;
    } else {
      parts.push(String(current));
      break;
    }
  }
  return parts.join(': ');
}
