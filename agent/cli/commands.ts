import { stringify } from 'yaml';
import { maskSecrets } from '../secrets.js';
import { loadConfig } from '../config/load.js';
import { BackupError, commandExitCode, ConfigError, ExitCode } from '../errors.js';
import { backupDatabase } from '../store/backup.js';
import { Store } from '../store/database.js';
import { latestVersion } from '../store/migrate.js';
import { MIGRATIONS } from '../store/migrations/index.js';
import { AGENT_NAME, AGENT_VERSION } from '../version.js';
import { configPath, printJson } from './common.js';

/** `edge-agent config check`: validates and prints the effective configuration, secrets masked. */
export function configCheck(options: { config?: string; json?: boolean }): number {
  const file = configPath(options.config);
  try {
    const { file: resolved, config } = loadConfig({ file });
    if (options.json) printJson({ valid: true, file: resolved, config: maskSecrets(config) });
    else {
      process.stderr.write(`configuration ${resolved} is valid; effective values (defaults, file, environment):\n`);
      process.stdout.write(stringify(maskSecrets(config)));
    }
    return ExitCode.ok;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    if (options.json) printJson({ valid: false, file: err.file, problems: err.problems });
    else process.stderr.write(`edge-agent: ${err.describe()}\n`);
    return commandExitCode(err);
  }
}

/** `edge-agent backup PATH`: an online copy of the database, safe while the daemon runs. */
export async function backup(destination: string, options: { config?: string; json?: boolean; force?: boolean }): Promise<number> {
  let store;
  try {
    store = loadConfig({ file: configPath(options.config) }).config.store;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`edge-agent: ${err.describe()}\n`);
    return commandExitCode(err);
  }
  try {
    const result = await backupDatabase({
      source: store.path,
      destination,
      force: options.force === true,
      busyTimeoutMs: store.busyTimeoutMs,
    });
    if (options.json) printJson(result);
    else {
      process.stdout.write(
        `backup written: ${result.destination} (${result.bytes} bytes, schema version ${result.schemaVersion}, integrity ok, ${result.durationMs} ms)\n`,
      );
    }
    return ExitCode.ok;
  } catch (err) {
    if (!(err instanceof BackupError)) throw err;
    process.stderr.write(`edge-agent: ${err.message}\n`);
    return commandExitCode(err);
  }
}

/** `edge-agent version`. */
export function version(options: { json?: boolean }): number {
  const info = {
    name: AGENT_NAME,
    version: AGENT_VERSION,
    node: process.versions.node,
    sqlite: Store.sqliteVersion(),
    schemaVersion: latestVersion(MIGRATIONS),
  };
  if (options.json) printJson(info);
  else process.stdout.write(`${info.name} ${info.version} (node ${info.node}, sqlite ${info.sqlite}, schema ${info.schemaVersion})\n`);
  return ExitCode.ok;
}
