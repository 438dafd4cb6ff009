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

const SECRET_KEY = /(password|passphrase|secret|token|privatekey|apikey)$/i;

/** A deep copy in which every value under a secret-looking key is replaced by "***". */
export function maskSecrets<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v) => maskSecrets(v)) as T;
  if (!isPlainObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEY.test(k) && v !== '' && v !== null && v !== undefined && !isPlainObject(v) ? '***' : maskSecrets(v);
  }
  return out as T;
}
