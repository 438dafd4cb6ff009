import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_CONFIG_PATH } from './load.js';

/** Where an installed agent reads its configuration by default (scripts/install-systemd.sh writes it). */
export const SYSTEM_CONFIG_PATH = '/etc/edge-agent/edge-agent.yaml';

/** The directory of this build's package.json: the checkout, or where the agent is installed (/opt/edge-agent). */
export function packageRoot(from: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return from;
  }
}

/**
 * Whether this edge-agent runs from a checkout of its sources (which hold
 * agent/main.ts beside dist/). An installed agent (install-systemd.sh, the
 * container image, an npm package) carries dist/ only.
 */
export function runningFromCheckout(root: string = packageRoot()): boolean {
  return existsSync(join(root, 'agent', 'main.ts'));
}

/**
 * The configuration file when neither --config nor $EDGE_AGENT_CONFIG names
 * one: config/edge-agent.yaml in the working directory for a checkout (as
 * `npm start` uses), /etc/edge-agent/edge-agent.yaml for an installed agent.
 */
export function defaultConfigPath(checkout: boolean = runningFromCheckout()): string {
  return checkout ? DEFAULT_CONFIG_PATH : SYSTEM_CONFIG_PATH;
}
