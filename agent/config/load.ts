import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import { ConfigError, type ConfigProblem } from '../errors.js';
import { readEnvironmentOverrides } from './env.js';
import { configSchema, defaultConfig, type Config } from './schema.js';

export const DEFAULT_CONFIG_PATH = 'config/edge-agent.yaml';

export interface LoadOptions {
  /** Path of the YAML file; relative paths start at `cwd`. */
  file: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** The configuration as validated, with every path made absolute. */
export interface LoadedConfig {
  file: string;
  config: Config;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Values from `over` replace those in `base`; objects merge key by key. Neither input is changed. */
function merge(base: unknown, over: unknown): unknown {
  // A section whose keys are all commented out reads as null: it means "defaults".
  if (over === undefined || (over === null && isPlainObject(base))) return base;
  if (isPlainObject(base) && isPlainObject(over)) {
    const out: Record<string, unknown> = { ...base };
    for (const [k, v] of Object.entries(over)) out[k] = merge(base[k], v);
    return out;
  }
  return over;
}

/**
 * Reads, merges (defaults < file < environment), validates and resolves the
 * configuration. Every problem found is collected and thrown at once as a
 * ConfigError; nothing is written anywhere.
 */
export function loadConfig(options: LoadOptions): LoadedConfig {
  const cwd = options.cwd ?? process.cwd();
  const env = options.env ?? process.env;
  const file = resolve(cwd, options.file);

  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const message = code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : `cannot read: ${String(err)}`;
    throw new ConfigError(file, [{ path: file, message, hint: 'copy config/edge-agent.example.yaml, or pass --config PATH or set EDGE_AGENT_CONFIG' }]);
  }

  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: true });
  const fromEnv = readEnvironmentOverrides(env);
  if (doc.errors.length > 0) {
    throw new ConfigError(file, [
      ...doc.errors.map((e) => ({
        path: '(YAML syntax)',
        message: (e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, ''),
        line: e.linePos?.[0]?.line,
        hint: 'fix the YAML syntax: indentation uses spaces, "key: value" needs a space after the colon',
      })),
      ...fromEnv.problems,
    ]);
  }

  const problems: ConfigProblem[] = [];
  const raw: unknown = doc.toJS() ?? {};
  if (!isPlainObject(raw)) {
    throw new ConfigError(file, [
      { path: '(top level)', message: 'the file must be a YAML mapping of sections', hint: 'start from config/edge-agent.example.yaml' },
    ]);
  }
  problems.push(...fromEnv.problems);

  const merged = merge(merge(defaultConfig(), raw), fromEnv.overrides);
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const envNames = new Map(fromEnv.applied.map((a) => [a.path, a.variable]));
    for (const issue of result.error.issues) {
      for (const problem of describeIssue(issue, doc, lineCounter)) {
        const variable = envNames.get(problem.path);
        problems.push(variable ? { ...problem, path: `env ${variable} (${problem.path})`, line: undefined } : problem);
      }
    }
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(file, problems);

  return { file, config: resolvePaths(result.data, cwd) };
}

/**
 * Makes every path absolute. Empty paths get their place under the data
 * directory: the database <dataDir>/edge-agent.db, the CA <dataDir>/ca, the
 * CRL <ca.dir>/crl.pem. Other file paths (http.tls.certFile and keyFile
 * among them) are made absolute against the working directory.
 */
export function resolvePaths(config: Config, cwd: string): Config {
  const dataDir = resolve(cwd, config.agent.dataDir);
  const storePath = config.store.path === '' ? resolve(dataDir, 'edge-agent.db') : resolve(cwd, config.store.path);
  const caDir = config.ca.dir === '' ? resolve(dataDir, 'ca') : resolve(cwd, config.ca.dir);
  const ca = {
    ...config.ca,
    dir: caDir,
    crlFile: config.ca.crlFile === '' ? resolve(caDir, 'crl.pem') : resolve(cwd, config.ca.crlFile),
    passphraseFile: config.ca.passphraseFile === '' ? '' : resolve(cwd, config.ca.passphraseFile),
  };
  const file = (path: string) => (path === '' ? '' : resolve(cwd, path));
  const mqtt = {
    ...config.mqtt,
    mosquittoDir: file(config.mqtt.mosquittoDir),
    mosquittoPidFile: file(config.mqtt.mosquittoPidFile),
    policy: {
      ...config.mqtt.policy,
      rules: config.mqtt.policy.rules.map((r) => (r.kind === 'claim' ? { ...r, manufacturerCaFile: file(r.manufacturerCaFile) } : r)),
    },
  };
  const http = { ...config.http, tls: { ...config.http.tls, certFile: file(config.http.tls.certFile), keyFile: file(config.http.tls.keyFile) } };
  return { ...config, agent: { ...config.agent, dataDir }, store: { ...config.store, path: storePath }, http, ca, mqtt };
}

function lineOf(doc: Document, lc: LineCounter, path: PropertyKey[], key?: string): number | undefined {
  const node = doc.getIn(path, true);
  if (key !== undefined) {
    if (!isMap(node)) return undefined;
    const pair = node.items.find((p) => isScalar(p.key) && p.key.value === key);
    const range = isScalar(pair?.key) ? pair.key.range : undefined;
    return range ? lc.linePos(range[0]).line : undefined;
  }
  const range = (node as { range?: [number, number, number] } | undefined)?.range;
  return range ? lc.linePos(range[0]).line : undefined;
}

function schemaAt(path: PropertyKey[]): z.ZodType | undefined {
  let current: z.ZodType | undefined = configSchema;
  for (const segment of path) {
    if (!(current instanceof z.ZodObject)) return undefined;
    current = (current.shape as Record<string, z.ZodType>)[String(segment)];
  }
  return current;
}

/** Levenshtein distance, for "did you mean" hints on misspelt keys. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

const typeOf = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'list' : typeof v === 'object' ? 'mapping' : typeof v);

function describeIssue(issue: z.core.$ZodIssue, doc: Document, lc: LineCounter): ConfigProblem[] {
  const path = issue.path as PropertyKey[];
  const dotted = path.map(String).join('.') || '(top level)';
  const schema = schemaAt(path);
  const hint = schema?.description;
  const line = lineOf(doc, lc, path);
  const at = (message: string, extraHint?: string): ConfigProblem[] => [{ path: dotted, message, hint: extraHint ?? hint, line }];

  switch (issue.code) {
    case 'unrecognized_keys': {
      const parent = schemaAt(path);
      const allowed = parent instanceof z.ZodObject ? Object.keys(parent.shape) : [];
      return issue.keys.map((key) => {
        const best = allowed.map((a) => ({ a, d: distance(key, a) })).sort((x, y) => x.d - y.d)[0];
        const suggestion = best && best.d <= Math.max(2, Math.floor(key.length / 3)) ? `did you mean "${best.a}"? ` : '';
        return {
          path: path.length ? `${dotted}.${key}` : key,
          message: 'unknown key',
          hint: `${suggestion}allowed here: ${allowed.join(', ')}`,
          line: lineOf(doc, lc, path, key),
        };
      });
    }
    case 'invalid_type': {
      const input = doc.getIn(path);
      if (input === undefined) return at(`missing; expected ${issue.expected}`);
      const expected = issue.expected === 'object' ? 'a mapping' : issue.expected === 'int' ? 'a whole number' : issue.expected;
      return at(`expected ${expected}, got ${typeOf(input)}`);
    }
    case 'too_small':
      return at(`must be at least ${String(issue.minimum)}${issue.origin === 'string' ? ' characters long' : ''}`);
    case 'too_big':
      return at(`must be at most ${String(issue.maximum)}`);
    case 'invalid_value':
      return at(`must be one of: ${issue.values.map(String).join(', ')}`);
    case 'invalid_format':
      return at(`has characters or a form that is not allowed`);
    default:
      return at(issue.message);
  }
}
