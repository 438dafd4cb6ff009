import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAIN } from './daemon.js';

/**
 * Checks what the suite needs from the machine before any test runs, and
 * says what to do when something is missing. `npm test` builds dist/ first
 * (the pretest script); the daemon tests run that build as a child process.
 */
export default function setup(): () => void {
  if (!existsSync(MAIN)) {
    throw new Error(`${MAIN} is missing: run the tests with \`npm test\`, which builds first`);
  }
  try {
    execFileSync('python3', ['-c', 'import socket; socket.AF_UNIX'], { stdio: 'ignore' });
  } catch {
    throw new Error('python3 is needed to capture systemd notifications in tests; install it (Debian: apt-get install -y python3)');
  }
  // A directory for what the test files share across their processes (the Samba domain, provisioned once: samba.ts).
  const suiteDir = mkdtempSync(join(tmpdir(), 'edge-agent-suite-'));
  process.env.EDGE_TEST_SUITE_DIR = suiteDir;
  return () => rmSync(suiteDir, { recursive: true, force: true });
}
