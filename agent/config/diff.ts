import { RESTART_ONLY_KEYS, type Config } from './schema.js';

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

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
  const restartOnly = changed.filter((path) =>
    RESTART_ONLY_KEYS.some((p) => path === p || path.startsWith(`${p}.`)),
  );
  return { changed, restartOnly };
}
