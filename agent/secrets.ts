/**
 * Which keys hold secrets, decided in one place: `config check` masks their
 * values and the logger writes them as "***", at any depth, whatever the
 * case of the key (`token`, `upstreamToken`, `keyPassphrase`, `Authorization`).
 */
const SECRET_KEY = /(password|passphrase|secret|token|privatekey|apikey|authorization|credentials?)$/i;

export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

/** A deep copy in which every non-empty value under a secret key is "***". Errors, dates and buffers pass through. */
export function maskSecrets<T>(value: T, depth = 0): T {
  if (depth > 8) return value;
  if (Array.isArray(value)) return value.map((v) => maskSecrets(v, depth + 1)) as T;
  if (!isPlainObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = isSecretKey(k) && v !== '' && v !== null && v !== undefined ? '***' : maskSecrets(v, depth + 1);
  }
  return out as T;
}
