#!/usr/bin/env node
import { describeError, ExitCode } from './errors.js';
import { runCli } from './cli/program.js';

runCli(process.argv).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`edge-agent: ${describeError(err)}\n`);
    process.exit(ExitCode.failure);
  },
);
