import { loadConfig } from '../config/load.js';
import { defaultConfigPath, runningFromCheckout, SYSTEM_CONFIG_PATH } from '../config/location.js';
import type { Config } from '../config/schema.js';
import { codeOf, commandExitCode, ConfigError, ExitCode, StoreMissingError } from '../errors.js';
import type { AuditRepository } from '../store/auditRepository.js';
import pino from 'pino';
import { Store } from '../store/database.js';
import { openRepositories, type Repositories } from '../store/repositories.js';
import { localActor } from './localActor.js';

/**
 * --config wins, then EDGE_AGENT_CONFIG (when not empty), then the default:
 * config/edge-agent.yaml in the working directory when this edge-agent runs
 * from a checkout, /etc/edge-agent/edge-agent.yaml when it is installed.
 */
export function configPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return option ?? (env.EDGE_AGENT_CONFIG || defaultConfigPath());
}

export const CONFIG_OPTION_HELP =
  'configuration file (default: $EDGE_AGENT_CONFIG, else ' +
  `${runningFromCheckout() ? `${defaultConfigPath()} in the working directory (a checkout)` : SYSTEM_CONFIG_PATH})`;

/** The search order, for `edge-agent --help`. */
export const CONFIG_HELP = `
Configuration: --config PATH, else $EDGE_AGENT_CONFIG, else
  ${
    runningFromCheckout()
      ? `config/edge-agent.yaml in the working directory (this edge-agent runs from a checkout;
  an installed one reads ${SYSTEM_CONFIG_PATH})`
      : `${SYSTEM_CONFIG_PATH} (this edge-agent is installed;
  one run from a checkout reads config/edge-agent.yaml in the working directory)`
  }.`;

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Commander collects a repeatable option into a list with this. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export type Common = { config?: string; json?: boolean };

/**
 * How a command reports an error: `code: message` on stderr, or with --json
 * `{ error: { code, message, ...extra } }` on stdout.
 */
export function reportError(opts: Common, code: string, message: string, extra: Record<string, unknown> = {}): void {
  if (opts.json) printJson({ error: { code, ...extra, message } });
  else process.stderr.write(`edge-agent: ${code}: ${message}\n`);
}

/**
 * Runs a command on the configuration (the CA's, the database's): an error
 * with a code in ERROR_TABLE is reported by its code and ends the command
 * with its exit code; any other is thrown (main.ts reports it, exit 1).
 */
export async function run(opts: Common, action: (config: Config) => Promise<unknown> | unknown, print: (result: never) => string): Promise<number> {
  let config: Config;
  let file: string;
  try {
    ({ config, file } = loadConfig({ file: configPath(opts.config) }));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`edge-agent: ${err.describe()}\n`);
    return commandExitCode(err);
  }
  try {
    const result = await action(config);
    if (opts.json) printJson(result);
    else process.stdout.write(print(result as never));
    return ExitCode.ok;
  } catch (err) {
    const code = codeOf(err);
    if (code === undefined) throw err;
    const hint = err instanceof StoreMissingError ? `; ${missingHint(file)}` : '';
    reportError(opts, code, `${(err as Error).message}${hint}`);
    return commandExitCode(err);
  }
}

const missingHint = (file: string): string =>
  `the configuration ${file} puts it there (agent.dataDir, store.path). If that is not the gateway's configuration, name it with --config ` +
  'or $EDGE_AGENT_CONFIG; if it is, the daemon has not started with it yet (it creates the database at its first start)';

/** Who runs a command on the gateway: the login of the real uid, with the sudo caller when root (see localActor). */
export const localUser = (): string => localActor();

/**
 * Who a command run on the gateway records as deciding: the login of the
 * real uid; a name given with --actor is a label kept beside it, never
 * instead of it (anyone can type one).
 */
export function actorLabel(given: string | undefined): string {
  const login = localUser();
  return given && given !== login ? `${given} (entered by ${login})` : login;
}

/** The audit entry of a change a command made on the database directly (inside the caller's transaction). */
export function localAudit(audit: AuditRepository, action: string, target: string, details?: Record<string, unknown>): void {
  audit.add({ actor: `local:${localUser()}`, role: 'local', action, target, outcome: 'done', ...(details ? { details } : {}) });
}

/**
 * Opens the database for a change made by one command and closes it when
 * `fn` (sync or async) is done. The database must exist: only the daemon
 * creates it (a change written to a database no daemon uses would be lost).
 * `fn` gets the repositories over it, built once for the command.
 */
export function withStore<T>(config: Config, fn: (store: Store, repos: Repositories) => T | Promise<T>): Promise<T> {
  return Promise.resolve()
    .then(() => Store.open(config.store, pino({ level: 'silent' }), { create: false }).store)
    .then((store) =>
      Promise.resolve()
        .then(() => fn(store, openRepositories(store)))
        .finally(() => store.close()),
    );
}

/**
 * Opens the database read-only for one command's read (never creating,
 * migrating or writing it) and closes it when `fn` is done.
 */
export function readStore<T>(config: Config, fn: (store: Store, repos: Repositories) => T | Promise<T>): Promise<T> {
  return Promise.resolve()
    .then(() => Store.openReadOnly(config.store))
    .then((store) =>
      Promise.resolve()
        .then(() => fn(store, openRepositories(store)))
        .finally(() => store.close()),
    );
}
