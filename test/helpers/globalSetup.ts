import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { MAIN } from './daemon.js';

/**
 * Checks what the suite needs from the machine before any test runs, and
 * says what to do when something is missing. `npm test` builds dist/ first
 * (the pretest script); the daemon tests run that build as a child process.
 */
export default function setup(): void {
  if (!existsSync(MAIN)) {
    throw new Error(`${MAIN} is missing: run the tests with \`npm test\`, which builds first`);
  }
  try {
    execFileSync('python3', ['-c', 'import socket; socket.AF_UNIX'], { stdio: 'ignore' });
  } catch {
    throw new Error('python3 is needed to capture systemd notifications in tests; install it (Debian: apt-get install -y python3)');
  }
}
