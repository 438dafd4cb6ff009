import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Reads the nearest package.json above this file: works from agent/ (tests) and dist/agent/ (built). */
function readPackage(): { name: string; version: string } {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate)) return JSON.parse(readFileSync(candidate, 'utf8')) as { name: string; version: string };
    const parent = dirname(dir);
    if (parent === dir) return { name: 'edge-agent', version: '0.0.0-unknown' };
    dir = parent;
  }
}

const pkg = readPackage();
export const AGENT_NAME = pkg.name;
export const AGENT_VERSION = pkg.version;
