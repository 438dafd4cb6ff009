import type { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { ConfigError, ExitCode } from '../errors.js';
import { ApiAnswerError, ApiClient, DaemonUnavailableError, NoTokenError, type ClientOptions } from './apiClient.js';
import { CONFIG_OPTION_HELP, configPath, printJson, run, type Common } from './common.js';

export type ApiOptions = Common & ClientOptions & { local?: boolean };

/** --local: on the database, for the commands that have a way to work without the daemon. */
export const LOCAL_HELP = 'work on the database directly instead of through the daemon (the gateway administrator, daemon down or access lost; changes are audited as local:<login>)';

/**
 * The options of every command that talks to the daemon's API; `--local`
 * only for a command that has a way to work on the database (`local`
 * false: one that needs the daemon, such as discover).
 */
export function apiOptions(c: Command, local = true): Command {
  const command = c
    .option('-c, --config <path>', CONFIG_OPTION_HELP)
    .option('--json', 'machine-readable output')
    .option('--token <token>', 'API token (default: $EDGE_AGENT_TOKEN, else the --token-file)')
    .option('--token-file <path>', 'file holding the API token (default: $EDGE_AGENT_TOKEN_FILE, else <dataDir>/admin.token)')
    .option('--ca <file>', "PEM CA chain to trust the API's certificate with (TLS; default: $EDGE_AGENT_CA, else the gateway CA's files)");
  return local ? command.option('--local', LOCAL_HELP) : command;
}

/** An exit code for an API error: 401/403/429 are permission (77); 400, 404 and 413 a bad command line (64: a bad value, or no such device, run, user...); the rest failures (1). */
function exitFor(err: ApiAnswerError): number {
  if (err.status === 401 || err.status === 403 || err.status === 429) return ExitCode.noPermission;
  if (err.status === 400 || err.status === 404 || err.status === 413) return ExitCode.usage;
  return ExitCode.failure;
}

export interface LocalPath<R> {
  /** What the fallback does, said on stderr. */
  what: string;
  run: (config: Config) => Promise<R> | R;
  /** A change: done on the database only with --local, never because the daemon did not answer. */
  writes?: boolean;
}

/**
 * Runs a command through the running daemon's API. A read with a `local`
 * path falls back to the database when the daemon is not running (nothing
 * answers) and says so on stderr; a change does so only with --local.
 * Otherwise an unreachable daemon is exit code 69.
 */
export async function runApi<R>(o: ApiOptions, viaApi: (client: ApiClient, config: Config) => Promise<R>, print: (result: R) => string, local?: LocalPath<R>): Promise<number> {
  let config: Config;
  try {
    config = loadConfig({ file: configPath(o.config) }).config;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`edge-agent: ${err.describe()}\n`);
    return ExitCode.config;
  }
  const onDatabase = (why: string): Promise<number> => {
    process.stderr.write(`edge-agent: ${why}: ${local!.what}\n`);
    return run(o, local!.run, print as (r: never) => string);
  };
  if (o.local) {
    if (!local) {
      process.stderr.write('edge-agent: --local: this command works only through the daemon\n');
      return ExitCode.usage;
    }
    return onDatabase('--local');
  }
  const fail = (code: string, message: string, exit: number) => {
    if (o.json) printJson({ error: { code, message } });
    else process.stderr.write(`edge-agent: ${code}: ${message}\n`);
    return exit;
  };
  try {
    const result = await viaApi(ApiClient.for(config, o), config);
    if (o.json) printJson(result);
    else process.stdout.write(print(result));
    return ExitCode.ok;
  } catch (err) {
    if (err instanceof DaemonUnavailableError) {
      if (!err.sent && local && !local.writes) return onDatabase(err.message);
      const hint = !err.sent && local?.writes ? ' (on the gateway, --local makes the change on the database for the daemon to pick up at its start)' : err.sent ? '' : '; this command needs the running daemon (systemctl start edge-agent)';
      return fail(err.code, `${err.message}${hint}`, err.sent ? ExitCode.failure : ExitCode.unavailable);
    }
    if (err instanceof ApiAnswerError) {
      if (o.json) printJson({ error: { code: err.apiCode, status: err.status, message: err.message } });
      else process.stderr.write(`edge-agent: ${err.apiCode}: ${err.message}\n`);
      return exitFor(err);
    }
    if (err instanceof NoTokenError) return fail(err.code, err.message, ExitCode.noPermission);
    if ((err as { code?: string }).code === 'USAGE') return fail('USAGE', (err as Error).message, ExitCode.usage);
    throw err;
  }
}
