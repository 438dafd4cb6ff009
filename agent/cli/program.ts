import { Command, CommanderError, Option } from 'commander';
import { ExitCode } from '../errors.js';
import { AGENT_VERSION } from '../version.js';
import { registerBrokerCommands } from './broker.js';
import { registerCaCommands } from './ca.js';
import { registerCertsCommands } from './certs.js';
import { registerConfigProfileCommands } from './configProfiles.js';
import { registerDeviceCommands } from './devices.js';
import { registerDiscoverCommand } from './discover.js';
import { registerOpcuaCommands } from './opcua.js';
import { registerReportCommand } from './report.js';
import { registerSessionCommands } from './session.js';
import { registerSyncCommands } from './sync.js';
import { registerUserCommands } from './users.js';
import { backup, configCheck, version } from './commands.js';
import { CONFIG_HELP, CONFIG_OPTION_HELP } from './common.js';
import { runDaemon } from './run.js';

const EXIT_CODES_HELP = `
Exit codes:
  0    success (including a graceful stop on SIGTERM/SIGINT)
  1    failure at start or run time (a restart may help)
  64   bad command line
  65   database corrupt or newer than this build (a restart will not help)
  66   the database does not exist (wrong --config, or the daemon never started with it)
  69   the command needs the running daemon: its API cannot be reached, or the
       database awaits the migration the daemon makes at its start
  77   the API refused the token (missing, unknown, expired, revoked) or the role;
       or this user may not read the database
  78   configuration invalid (a restart will not help)
  130  forced exit on a second SIGTERM/SIGINT`;

/** Builds the `edge-agent` command. Each action sets `result.code`. */
export function buildProgram(result: { code: number }): Command {
  const program = new Command('edge-agent')
    .description('Edge agent for IIoT gateways: device discovery, local CA, SQLite state, CMMS sync')
    .version(AGENT_VERSION, '-V, --version', 'print the version')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', `${CONFIG_HELP}\n${EXIT_CODES_HELP}`)
    .exitOverride();

  program
    .command('run')
    .description('run the daemon in the foreground (under systemd: Type=notify)')
    .option('-c, --config <path>', CONFIG_OPTION_HELP)
    .option('--pretty', 'human-readable log lines instead of JSON')
    .addHelpText('after', '\nSignals: SIGTERM/SIGINT stop gracefully, a second one forces exit; SIGHUP reloads the configuration.')
    .action(async (opts: { config?: string; pretty?: boolean }) => {
      result.code = await runDaemon(opts);
    });

  const config = program.command('config').description('work with the configuration file');
  config
    .command('check')
    .description('validate the configuration and print the effective values (secrets masked)')
    .option('-c, --config <path>', CONFIG_OPTION_HELP)
    .option('--json', 'machine-readable output')
    .action((opts: { config?: string; json?: boolean }) => {
      result.code = configCheck(opts);
    });

  program
    .command('backup')
    .description('copy the database online (safe while the daemon runs); the copy is integrity-checked')
    .argument('<path>', 'file to write the backup to')
    .option('-c, --config <path>', CONFIG_OPTION_HELP)
    .option('-f, --force', 'replace an existing file at <path>')
    .option('--json', 'machine-readable output')
    .action(async (path: string, opts: { config?: string; json?: boolean; force?: boolean }) => {
      result.code = await backup(path, opts);
    });

  program
    .command('version')
    .description('print the version of the agent, Node.js, SQLite and the database schema')
    .addOption(new Option('--json', 'machine-readable output'))
    .action((opts: { json?: boolean }) => {
      result.code = version(opts);
    });

  registerCaCommands(program, result);
  registerCertsCommands(program, result);
  registerBrokerCommands(program, result);
  registerDiscoverCommand(program, result);
  registerDeviceCommands(program, result);
  registerConfigProfileCommands(program, result);
  registerOpcuaCommands(program, result);
  registerSyncCommands(program, result);
  registerUserCommands(program, result);
  registerSessionCommands(program, result);
  registerReportCommand(program, result);
  return program;
}

/** Parses `argv` and runs the chosen command; resolves with the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const result = { code: ExitCode.ok as number };
  const program = buildProgram(result);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      const ok = ['commander.helpDisplayed', 'commander.help', 'commander.version'].includes(err.code);
      return ok ? ExitCode.ok : ExitCode.usage;
    }
    throw err;
  }
  return result.code;
}
