import { z } from 'zod';
import { configSchema, needsRestart, type Config } from './schema.js';

/** Dotted paths of the keys and sections marked restart-only on the schema (a section's mark covers every key in it). */
function restartOnlyPaths(schema: z.ZodType, prefix: string): string[] {
  if (prefix !== '' && needsRestart(schema)) return [prefix];
  if (!(schema instanceof z.ZodObject)) return [];
  return Object.entries(schema.shape as Record<string, z.ZodType>).flatMap(([k, s]) => restartOnlyPaths(s, prefix ? `${prefix}.${k}` : k));
}

export const RESTART_ONLY_KEYS: readonly string[] = restartOnlyPaths(configSchema, '');

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Dotted paths of every leaf that differs between two configurations. */
export function changedKeys(before: unknown, after: unknown, prefix = ''): string[] {
  if (isPlainObject(before) && isPlainObject(after)) {
    const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
    return [...keys].flatMap((k) => changedKeys(before[k], after[k], prefix ? `${prefix}.${k}` : k));
  }
  return JSON.stringify(before) === JSON.stringify(after) ? [] : [prefix];
}

export interface ReloadPlan {
  changed: string[];
  /** Changed keys that only take effect after a restart. */
  restartOnly: string[];
}

export function planReload(running: Config, next: Config): ReloadPlan {
  const changed = changedKeys(running, next);
  const restartOnly = changed.filter((path) => RESTART_ONLY_KEYS.some((p) => path === p || path.startsWith(`${p}.`)));
  return { changed, restartOnly };
}
