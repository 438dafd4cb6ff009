/**
 * Software versions as nameplates report them, compared the way a patch
 * policy needs: semantic versions (with pre-release order, build metadata
 * ignored) and dotted numeric versions of any length (1.2.10 > 1.2.9,
 * 1.2 = 1.2.0), an optional leading `v`. Anything else ("V1.04 build 7",
 * "2.1b", "") is unparseable: the report says unknown, never compliant.
 */
export interface Version {
  /** The numeric parts without leading zeros, as digit strings (no overflow on long build numbers). */
  numbers: string[];
  /** Pre-release identifiers (semver: after `-`); empty for a release. */
  pre: string[];
}

const VERSION = /^[vV]?(\d+(?:\.\d+)*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$/;
/** Longer text is no version any nameplate sends. */
const MAX_LENGTH = 128;

/** The version, or undefined when the text is not one the report can compare. */
export function parseVersion(text: string): Version | undefined {
  const trimmed = text.trim();
  if (trimmed.length > MAX_LENGTH) return undefined;
  const m = VERSION.exec(trimmed);
  if (!m) return undefined;
  return { numbers: m[1]!.split('.').map((n) => n.replace(/^0+(?=\d)/, '')), pre: m[2] ? m[2].split('.') : [] };
}

const isNumeric = (s: string) => /^\d+$/.test(s);

/** Digit strings without leading zeros compared as numbers. */
function compareDigits(a: string, b: string): number {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Semver 2.0.0 §11: numeric identifiers numerically and below alphanumeric ones, ASCII order otherwise, a longer list after its prefix. */
function comparePre(a: string[], b: string[]): number {
  if (a.length === 0 || b.length === 0) return a.length === b.length ? 0 : a.length === 0 ? 1 : -1;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i]!;
    const y = b[i]!;
    const nx = isNumeric(x);
    const ny = isNumeric(y);
    const c = nx && ny ? compareDigits(x.replace(/^0+(?=\d)/, ''), y.replace(/^0+(?=\d)/, '')) : nx ? -1 : ny ? 1 : x < y ? -1 : x > y ? 1 : 0;
    if (c !== 0) return c;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/** -1, 0 or 1 as `a` is older than, the same as or newer than `b`; missing numeric parts count as 0. */
export function compareVersions(a: Version, b: Version): -1 | 0 | 1 {
  const n = Math.max(a.numbers.length, b.numbers.length);
  for (let i = 0; i < n; i++) {
    const c = compareDigits(a.numbers[i] ?? '0', b.numbers[i] ?? '0');
    if (c !== 0) return c < 0 ? -1 : 1;
  }
  const p = comparePre(a.pre, b.pre);
  return p < 0 ? -1 : p > 0 ? 1 : 0;
}
