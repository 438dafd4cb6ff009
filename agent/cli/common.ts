import { DEFAULT_CONFIG_PATH, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { CertError } from '../../certs/errors.js';
import { ConfigError, ExitCode, RefusedError, UsageError } from '../errors.js';
import { AuditRepository } from '../store/auditRepository.js';
import pino from 'pino';
import { Store } from '../store/database.js';

/** --config wins, then EDGE_AGENT_CONFIG, then config/edge-agent.yaml in the working directory. */
export function configPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return option ?? env.EDGE_AGENT_CONFIG ?? DEFAULT_CONFIG_PATH;
}

export const CONFIG_OPTION_HELP = `configuration file (default: $EDGE_AGENT_CONFIG, else ${DEFAULT_CONFIG_PATH})`;

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Commander collects a repeatable option into a list with this. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export type Common = { config?: string; json?: boolean };

/** Runs a CA command: loads the configuration, maps known errors to a message and an exit code. */
export async function run(opts: Common, action: (config: Config) => Promise<unknown> | unknown, print: (result: never) => string): Promise<number> {
  let config: Config;
  try {
    config = loadConfig({ file: configPath(opts.config) }).config;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`edge-agent: ${err.describe()}\n`);
    return ExitCode.config;
  }
  try {
    const result = await action(config);
    if (opts.json) printJson(result);
    else process.stdout.write(print(result as never));
    return ExitCode.ok;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (err instanceof CertError || err instanceof UsageError || err instanceof RefusedError || code === 'CA_PASSPHRASE_UNREADABLE') {
      if (opts.json) printJson({ error: { code, message: (err as Error).message } });
      else process.stderr.write(`edge-agent: ${code}: ${(err as Error).message}\n`);
      return err instanceof UsageError ? ExitCode.usage : ExitCode.failure;
    }
    throw err;
  }
}


/** Who runs a command on the gateway: $SUDO_USER, else $USER. */
export const localUser = (): string => process.env.SUDO_USER ?? process.env.USER ?? 'cli';

/** The audit entry of a change a command made on the database directly (inside the caller's transaction). */
export function localAudit(store: Store, action: string, target: string, details?: Record<string, unknown>): void {
  new AuditRepository(store).add({ actor: `local:${localUser()}`, role: 'local', action, target, outcome: 'done', ...(details ? { details } : {}) });
}

/** Opens the database for one command and closes it when `fn` (sync or async) is done. */
export function withStore<T>(config: Config, fn: (store: Store) => T | Promise<T>): Promise<T> {
  const { store } = Store.open(config.store, pino({ level: 'silent' }));
  return Promise.resolve()
    .then(() => fn(store))
    .finally(() => store.close());
}
