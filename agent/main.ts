#!/usr/bin/env node
import { commandExitCode, describeError } from './errors.js';
import { runCli } from './cli/program.js';

// Whatever any command writes (database, backups, keys) is for its own user
// only, from the first byte; files meant to be public are chmod-ed explicitly.
process.umask(0o077);

runCli(process.argv).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // What no command reported itself: an error of the table ends with its code's exit code, anything else (a bug) with 1.
    process.stderr.write(`edge-agent: ${describeError(err)}\n`);
    process.exit(commandExitCode(err));
  },
);
