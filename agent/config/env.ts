import { z } from 'zod';
import type { ConfigProblem } from '../errors.js';
import { configSchema } from './schema.js';

export const ENV_PREFIX = 'EDGE_AGENT_';

/**
 * EDGE_AGENT_* variables that are not configuration keys: the file, the test failpoint, and the commands' API token, token file,
 * CA to trust and session file of edge-agent login.
 */
const NON_CONFIG_VARIABLES = new Set([
  'EDGE_AGENT_CONFIG',
  'EDGE_AGENT_FAILPOINT',
  'EDGE_AGENT_TOKEN',
  'EDGE_AGENT_TOKEN_FILE',
  'EDGE_AGENT_CA',
  'EDGE_AGENT_SESSION_FILE',
]);

type Leaf = { section: string; key: string; schema: z.ZodType };

const snake = (name: string) => name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();

/** `store.busyTimeoutMs` -> `EDGE_AGENT_STORE_BUSY_TIMEOUT_MS`, for every key of every section. */
export function environmentVariables(): Map<string, Leaf> {
  const out = new Map<string, Leaf>();
  for (const [section, sectionSchema] of Object.entries(configSchema.shape)) {
    for (const [key, schema] of Object.entries(sectionSchema.shape)) {
      // Only scalar keys have a variable; nested objects and lists are set in the file.
      if (!(schema instanceof z.ZodString || schema instanceof z.ZodNumber || schema instanceof z.ZodBoolean || schema instanceof z.ZodEnum)) continue;
      out.set(`${ENV_PREFIX}${snake(section)}_${snake(key)}`, { section, key, schema: schema as z.ZodType });
    }
  }
  return out;
}

function convert(raw: string, schema: z.ZodType): { value: unknown } | { problem: string; hint: string } {
  if (schema instanceof z.ZodNumber) {
    const trimmed = raw.trim();
    if (!/^-?\d+(\.\d+)?$/.test(trimmed)) return { problem: `"${raw}" is not a number`, hint: schema.description ?? 'a number' };
    return { value: Number(trimmed) };
  }
  if (schema instanceof z.ZodBoolean) {
    const v = raw.trim().toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(v)) return { value: true };
    if (['false', '0', 'no', 'off'].includes(v)) return { value: false };
    return { problem: `"${raw}" is not a boolean`, hint: 'use true or false' };
  }
  return { value: raw };
}

/**
 * Reads EDGE_AGENT_<SECTION>_<KEY> overrides from `env`. Values are converted
 * to the key's type; the schema then validates them like file values. An
 * EDGE_AGENT_ variable that names no key is a problem, so a typo in a unit
 * file is reported instead of being ignored.
 */
export function readEnvironmentOverrides(env: NodeJS.ProcessEnv): {
  overrides: Record<string, Record<string, unknown>>;
  problems: ConfigProblem[];
  /** Which variable set which dotted key, so validation problems can name the variable. */
  applied: { path: string; variable: string }[];
} {
  const known = environmentVariables();
  const overrides: Record<string, Record<string, unknown>> = {};
  const problems: ConfigProblem[] = [];
  const applied: { path: string; variable: string }[] = [];
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || raw === undefined || NON_CONFIG_VARIABLES.has(name)) continue;
    const leaf = known.get(name);
    if (!leaf) {
      problems.push({
        path: `env ${name}`,
        message: 'unknown environment override',
        hint: `overrides are ${ENV_PREFIX}<SECTION>_<KEY>, for example ${ENV_PREFIX}STORE_PATH; see docs/configuration.md`,
      });
      continue;
    }
    const converted = convert(raw, leaf.schema);
    if ('problem' in converted) {
      problems.push({ path: `env ${name}`, message: converted.problem, hint: converted.hint });
      continue;
    }
    (overrides[leaf.section] ??= {})[leaf.key] = converted.value;
    applied.push({ path: `${leaf.section}.${leaf.key}`, variable: name });
  }
  return { overrides, problems, applied };
}
