import type { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { ConfigError, ExitCode } from '../errors.js';
import { daemonRunning } from '../lifecycle/instanceLock.js';
import { ApiAnswerError, ApiClient, DaemonUnavailableError, type ClientOptions } from './apiClient.js';
import { CONFIG_OPTION_HELP, configPath, printJson, run, type Common } from './common.js';

export type ApiOptions = Common & ClientOptions & { local?: boolean };

/** The options of every command that talks to the daemon's API. */
export function apiOptions(c: Command): Command {
  return c
    .option('-c, --config <path>', CONFIG_OPTION_HELP)
    .option('--json', 'machine-readable output')
    .option('--token <token>', 'API token (default: $EDGE_AGENT_TOKEN, else the --token-file)')
    .option('--token-file <path>', 'file holding the API token (default: $EDGE_AGENT_TOKEN_FILE, else <dataDir>/admin.token)');
}

/** An exit code for an API error: 401/403/429 are permission (77); 400, 404 and 413 a bad command line (64: a bad value, or no such device, run, user...); the rest failures (1). */
function exitFor(err: ApiAnswerError): number {
  if (err.status === 401 || err.status === 403 || err.status === 429) return ExitCode.noPermission;
  if (err.status === 400 || err.status === 404 || err.status === 413) return ExitCode.usage;
  return ExitCode.failure;
}

/**
 * Runs a command through the running daemon's API. When the daemon is not
 * running, a command with a `local` fallback works on the database directly
 * (reads, and what the daemon picks up at its next start) and says so on
 * stderr; one without fails with exit code 69.
 */
export async function runApi<R>(
  o: ApiOptions,
  viaApi: (client: ApiClient, config: Config) => Promise<R>,
  print: (result: R) => string,
  local?: { what: string; run: (config: Config) => Promise<R> | R },
): Promise<number> {
  let config: Config;
  try {
    config = loadConfig({ file: configPath(o.config) }).config;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`edge-agent: ${err.describe()}\n`);
    return ExitCode.config;
  }
  const fallback = async (why: string): Promise<number> => {
    if (!local) {
      process.stderr.write(`edge-agent: DAEMON_UNAVAILABLE: ${why}; this command needs the running daemon (systemctl start edge-agent)\n`);
      return ExitCode.unavailable;
    }
    process.stderr.write(`edge-agent: ${why}: ${local.what}\n`);
    return run(o, local.run, print as (r: never) => string);
  };
  if (o.local && local) return fallback('--local');
  if (!daemonRunning(config.agent.dataDir)) return fallback('the daemon is not running');
  try {
    const result = await viaApi(ApiClient.for(config, o), config);
    if (o.json) printJson(result);
    else process.stdout.write(print(result));
    return ExitCode.ok;
  } catch (err) {
    if (err instanceof DaemonUnavailableError) return fallback(err.message);
    if (err instanceof ApiAnswerError) {
      if (o.json) printJson({ error: { code: err.apiCode, status: err.status, message: err.message } });
      else process.stderr.write(`edge-agent: ${err.apiCode}: ${err.message}\n`);
      return exitFor(err);
    }
    const code = (err as { code?: string }).code;
    if (code === 'USAGE') {
      process.stderr.write(`edge-agent: ${(err as Error).message}\n`);
      return ExitCode.usage;
    }
    throw err;
  }
}
