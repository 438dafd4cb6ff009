import type { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { codeOf, commandExitCode, ConfigError, ExitCode, exitForAnswer } from '../errors.js';
import { ApiAnswerError, ApiClient, DaemonUnavailableError, type ClientOptions } from './apiClient.js';
import { CONFIG_OPTION_HELP, configPath, printJson, reportError, run, type Common } from './common.js';

export type ApiOptions = Common & ClientOptions & { local?: boolean };

/** --local: on the database, for the commands that have a way to work without the daemon. */
export const LOCAL_HELP =
  'work on the database directly instead of through the daemon (the gateway administrator, daemon down or access lost; changes are audited as local:<login>)';

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
    .option(
      '--token-file <path>',
      'file holding the API token (default: $EDGE_AGENT_TOKEN_FILE, else the session of edge-agent login, else <dataDir>/admin.token)',
    )
    .option('--ca <file>', "PEM CA chain to trust the API's certificate with (TLS; default: $EDGE_AGENT_CA, else the gateway CA's files)");
  return local ? command.option('--local', LOCAL_HELP) : command;
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
 * Otherwise an unreachable daemon is exit code 69. Errors are reported by
 * code, and end the command with the exit code ERROR_TABLE gives the code
 * (an API answer's: exitForAnswer). `client` makes the client (default:
 * with the credential resolveCredential finds).
 */
export async function runApi<R>(
  o: ApiOptions,
  viaApi: (client: ApiClient, config: Config) => Promise<R>,
  print: (result: R) => string,
  local?: LocalPath<R>,
  client: (config: Config) => ApiClient = (config) => ApiClient.for(config, o),
): Promise<number> {
  let config: Config;
  try {
    config = loadConfig({ file: configPath(o.config) }).config;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`edge-agent: ${err.describe()}\n`);
    return commandExitCode(err);
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
  try {
    const result = await viaApi(client(config), config);
    if (o.json) printJson(result);
    else process.stdout.write(print(result));
    return ExitCode.ok;
  } catch (err) {
    if (err instanceof DaemonUnavailableError) {
      if (!err.sent && local && !local.writes) return onDatabase(err.message);
      const hint =
        !err.sent && local?.writes
          ? ' (on the gateway, --local makes the change on the database for the daemon to pick up at its start)'
          : err.sent
            ? ''
            : '; this command needs the running daemon (systemctl start edge-agent)';
      reportError(o, err.code, `${err.message}${hint}`);
      // Sent without an answer: whether it was carried out is unknown, a failure rather than "needs the daemon".
      return err.sent ? ExitCode.failure : commandExitCode(err);
    }
    if (err instanceof ApiAnswerError) {
      reportError(o, err.apiCode, err.message, { status: err.status });
      return exitForAnswer(err.status, err.apiCode);
    }
    const code = codeOf(err);
    if (code === undefined) throw err;
    reportError(o, code, (err as Error).message);
    return commandExitCode(err);
  }
}
