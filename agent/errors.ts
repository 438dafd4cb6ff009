/**
 * Errors the agent decides on. Every class carries a stable `code` literal;
 * callers branch on `code`, never on message text. Details go in `details`
 * (logged as fields), the underlying error in `cause`.
 */
export abstract class AgentError extends Error {
  abstract readonly code: string;
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

export class BackupError extends AgentError {
  readonly code = 'BACKUP_FAILED' as const;
}

/**
 * Process exit codes (documented in docs/operations.md). Values follow
 * sysexits(3) so that a systemd unit can list the ones a restart will not fix
 * in `RestartPreventExitStatus=`.
 */
export const ExitCode = {
  ok: 0,
  /** A service failed at start or at run time; a restart may help. */
  failure: 1,
  /** Bad command line. */
  usage: 64,
  /** The database is corrupt or newer than this build: a restart will not help. */
  dataError: 65,
  /** The database a command works on does not exist (EX_NOINPUT). */
  noInput: 66,
  /** The command needs the running daemon (its API cannot be reached, or the database awaits its migration). */
  unavailable: 69,
  /** The API refused the token (401) or the role (403); or this user may not read the database. */
  noPermission: 77,
  /** The configuration is invalid: a restart will not help. */
  config: 78,
  /** A second SIGTERM/SIGINT cut a graceful stop short. */
  forced: 130,
} as const;

const CA_SETUP_ERRORS = new Set(['CA_PASSPHRASE_UNREADABLE', 'CA_KEY_PERMISSIONS', 'CA_KEY_MISMATCH', 'CA_KEY_DAMAGED', 'ISSUING_CA_REVOKED', 'CA_PASSPHRASE_WRONG', 'CA_PASSPHRASE_MISSING', 'CA_NOT_INITIALISED']);

/** Maps an error to the exit code the process ends with. */
export function exitCodeFor(err: unknown): number {
  const root = err instanceof ServiceStartError && err.cause !== undefined ? err.cause : err;
  if (root instanceof ConfigError || root instanceof ConfigFileError) return ExitCode.config;
  // CA keys exposed, undecryptable or not matching their certificate: a restart will not help.
  const code = (root as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && CA_SETUP_ERRORS.has(code)) return ExitCode.config;
  if (root instanceof StoreCorruptError || root instanceof StoreTooNewError) return ExitCode.dataError;
  if (root instanceof UsageError) return ExitCode.usage;
  if (root instanceof StoreMissingError) return ExitCode.noInput;
  if (root instanceof StoreNotMigratedError) return ExitCode.unavailable;
  if (root instanceof StoreAccessError) return ExitCode.noPermission;
  return ExitCode.failure;
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
