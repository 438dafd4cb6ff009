import { DEFAULT_CONFIG_PATH } from '../config/load.js';

/** --config wins, then EDGE_AGENT_CONFIG, then config/edge-agent.yaml in the working directory. */
export function configPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return option ?? env.EDGE_AGENT_CONFIG ?? DEFAULT_CONFIG_PATH;
}

export const CONFIG_OPTION_HELP = `configuration file (default: $EDGE_AGENT_CONFIG, else ${DEFAULT_CONFIG_PATH})`;

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
