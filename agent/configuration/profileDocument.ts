import { createHash } from 'node:crypto';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { AgentError } from '../errors.js';
import { LOCATION_FIELDS, type Protocol } from '../inventory/device.js';
import { OPCUA_DATA_TYPES, type JsonValue, type OpcuaDataType, type OpcuaNodeBinding } from './types.js';

/** One problem of a profile document, at its path (`values.threshold`, `overrides["mqtt:pump-7"].rate`). */
export interface ProfileProblem {
  path: string;
  message: string;
}

/** A profile document that cannot be stored; every problem is listed, nothing was stored. */
export class ProfileInvalidError extends AgentError {
  readonly code = 'PROFILE_INVALID' as const;
  constructor(readonly problems: ProfileProblem[]) {
    super(`the profile is invalid: ${problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`);
  }
}

export type ValueType = 'number' | 'integer' | 'string' | 'boolean';
export type Scalar = string | number | boolean;

export interface ValueSchema {
  type: ValueType;
  minimum?: number;
  maximum?: number;
  enum?: Scalar[];
  maxLength?: number;
  required?: boolean;
}

export interface Selector {
  manufacturer?: string;
  model?: string;
  location?: { site?: string; area?: string; line?: string; cell?: string };
  labels?: Record<string, string>;
}

/** A profile document as validated, defaults applied (the form stored and hashed). */
export interface ProfileDocument {
  name: string;
  protocol: Protocol;
  description?: string;
  priority: number;
  selector?: Selector;
  schema: Record<string, ValueSchema>;
  values: Record<string, Scalar>;
  overrides: Record<string, Record<string, Scalar>>;
  nodes?: Record<string, OpcuaNodeBinding>;
  reapplyOnDrift: boolean;
}

export const PROFILE_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const KEY = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;
/** ns=<n>; (optional), then i=<number>, s=<string>, g=<GUID> or b=<base64> (OPC UA Part 6, 5.3.1.10). */
const NODE_ID =
  /^(ns=\d{1,5};)?(i=\d{1,10}|s=.{1,4096}|g=[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|b=[A-Za-z0-9+/]+={0,2})$/s;

/** Keys that name a JavaScript object's own machinery: refused everywhere a document names a key (they would be dropped, or worse). */
export const RESERVED_KEYS: readonly string[] = ['__proto__', 'constructor', 'prototype'];
const RESERVED_MESSAGE = `a reserved name: ${RESERVED_KEYS.join(', ')} cannot be keys`;

const pattern = z.string().min(1).max(128);
/** What a number that is not finite is called in messages (YAML .inf, -.inf, .nan). */
const nonFinite = (v: number) => (Number.isNaN(v) ? 'NaN (YAML .nan)' : v > 0 ? 'Infinity (YAML .inf)' : '-Infinity (YAML -.inf)');
const finite = z.number({
  error: (iss) => (typeof iss.input === 'number' && !Number.isFinite(iss.input) ? `expected a finite number, got ${nonFinite(iss.input)}` : undefined),
});
const scalar = z.union([z.string().max(4096), finite, z.boolean()]);
const keyed = <T extends z.ZodType>(value: T) => z.record(z.string().regex(KEY, 'a key of letters, digits, _ . - (starting with a letter or _)'), value);

const documentSchema = z.strictObject({
  name: z.string().regex(PROFILE_NAME, 'lower-case letters, digits, . _ - (up to 64, starting with a letter or digit)'),
  protocol: z.enum(['mqtt', 'opcua']),
  description: z.string().max(500).optional(),
  priority: z.number().int().min(-1_000_000).max(1_000_000).default(0),
  selector: z
    .strictObject({
      manufacturer: pattern.optional(),
      model: pattern.optional(),
      location: z
        .strictObject(
          Object.fromEntries(LOCATION_FIELDS.map((f) => [f, pattern.optional()])) as Record<'site' | 'area' | 'line' | 'cell', z.ZodOptional<typeof pattern>>,
        )
        .optional(),
      labels: z.record(z.string().regex(LABEL_KEY, 'a label key'), pattern).optional(),
    })
    .optional(),
  schema: keyed(
    z.strictObject({
      type: z.enum(['number', 'integer', 'string', 'boolean']),
      minimum: finite.optional(),
      maximum: finite.optional(),
      enum: z.array(scalar).min(1).max(256).optional(),
      maxLength: z.number().int().min(0).max(4096).optional(),
      required: z.boolean().optional(),
    }),
  ),
  values: keyed(z.unknown()).default({}),
  overrides: z.record(z.string().min(1).max(300), keyed(z.unknown())).default({}),
  nodes: keyed(z.strictObject({ nodeId: z.string().min(1), dataType: z.string() })).optional(),
  reapplyOnDrift: z.boolean().optional(),
});

const INTEGER_TYPES: Partial<Record<OpcuaDataType, [number, number]>> = {
  SByte: [-128, 127],
  Byte: [0, 255],
  Int16: [-32768, 32767],
  UInt16: [0, 65535],
  Int32: [-2147483648, 2147483647],
  UInt32: [0, 4294967295],
  Int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  UInt64: [0, Number.MAX_SAFE_INTEGER],
};
/** Which OPC UA data types can carry a value of each schema type. */
const CARRIES: Record<ValueType, readonly OpcuaDataType[]> = {
  boolean: ['Boolean'],
  string: ['String'],
  integer: [...(Object.keys(INTEGER_TYPES) as OpcuaDataType[]), 'Float', 'Double'],
  number: ['Float', 'Double'],
};

const shown = (v: unknown): string =>
  typeof v === 'string'
    ? JSON.stringify(v)
    : typeof v === 'number' && !Number.isFinite(v)
      ? nonFinite(v)
      : v === undefined
        ? 'nothing'
        : (JSON.stringify(v) ?? String(v));
/** A value's kind and the value: `number 5`, `array [1]`, `null`, `number NaN (YAML .nan)`. */
function describe(v: unknown): string {
  if (v === null) return 'null';
  return `${Array.isArray(v) ? 'array' : typeof v} ${shown(v)}`;
}
const at = (base: string, key: string) => (KEY.test(key) ? `${base}.${key}` : `${base}[${JSON.stringify(key)}]`);

/** Why a value does not fit its schema entry (undefined: it fits). */
export function valueProblem(s: ValueSchema, v: unknown): string | undefined {
  const kind = typeof v;
  const ok = s.type === 'integer' ? kind === 'number' && Number.isInteger(v) : s.type === 'number' ? kind === 'number' && Number.isFinite(v) : kind === s.type;
  if (!ok)
    return kind === 'number' && !Number.isFinite(v) && s.type !== 'string' && s.type !== 'boolean'
      ? `expected a finite ${s.type}, got ${nonFinite(v as number)}`
      : `expected ${s.type}, got ${describe(v)}`;
  if (typeof v === 'number') {
    if (s.minimum !== undefined && v < s.minimum) return `expected at least ${s.minimum}, got ${v}`;
    if (s.maximum !== undefined && v > s.maximum) return `expected at most ${s.maximum}, got ${v}`;
  }
  if (typeof v === 'string' && s.maxLength !== undefined && v.length > s.maxLength) return `expected at most ${s.maxLength} characters, got ${v.length}`;
  if (s.enum && !s.enum.includes(v as Scalar)) return `expected one of ${s.enum.map(shown).join(', ')}, got ${shown(v)}`;
  return undefined;
}

function checkSchema(schema: Record<string, ValueSchema>, problems: ProfileProblem[]): void {
  for (const [key, s] of Object.entries(schema)) {
    const path = at('schema', key);
    const numeric = s.type === 'number' || s.type === 'integer';
    if (!numeric && (s.minimum !== undefined || s.maximum !== undefined))
      problems.push({ path, message: `minimum and maximum apply to number and integer, not ${s.type}` });
    if (s.type !== 'string' && s.maxLength !== undefined) problems.push({ path, message: `maxLength applies to string, not ${s.type}` });
    if (s.minimum !== undefined && s.maximum !== undefined && s.minimum > s.maximum)
      problems.push({ path, message: `minimum ${s.minimum} is above maximum ${s.maximum}` });
    for (const [i, e] of (s.enum ?? []).entries()) {
      const why = valueProblem({ type: s.type }, e);
      if (why) problems.push({ path: `${path}.enum[${i}]`, message: why });
    }
  }
}

function checkValues(base: string, values: Record<string, unknown>, schema: Record<string, ValueSchema>, problems: ProfileProblem[]): void {
  for (const [key, v] of Object.entries(values)) {
    const s = schema[key];
    if (!s) {
      problems.push({ path: at(base, key), message: `${key} is not declared in schema (declared: ${Object.keys(schema).join(', ') || 'none'})` });
      continue;
    }
    const why = valueProblem(s, v);
    if (why) problems.push({ path: at(base, key), message: why });
  }
}

function checkNodes(doc: z.infer<typeof documentSchema>, problems: ProfileProblem[]): void {
  const used = new Set([...Object.keys(doc.values), ...Object.values(doc.overrides).flatMap((o) => Object.keys(o))]);
  if (doc.protocol !== 'opcua') {
    if (doc.nodes) problems.push({ path: 'nodes', message: 'nodes apply to opcua profiles only' });
    if (doc.reapplyOnDrift !== undefined) problems.push({ path: 'reapplyOnDrift', message: 'reapplyOnDrift applies to opcua profiles only' });
    return;
  }
  const nodes = doc.nodes ?? {};
  for (const key of used)
    if (!nodes[key]) problems.push({ path: at('nodes', key), message: `no node for value ${key}: every value of an opcua profile needs {nodeId, dataType}` });
  for (const [key, n] of Object.entries(nodes)) {
    const path = at('nodes', key);
    const s = doc.schema[key];
    if (!s) problems.push({ path, message: `${key} is not declared in schema` });
    if (!NODE_ID.test(n.nodeId))
      problems.push({
        path: `${path}.nodeId`,
        message: `not a NodeId: expected ns=<n>;i=<number> | s=<string> | g=<guid> | b=<base64>, got ${shown(n.nodeId)}`,
      });
    if (!(OPCUA_DATA_TYPES as readonly string[]).includes(n.dataType)) {
      problems.push({ path: `${path}.dataType`, message: `expected one of ${OPCUA_DATA_TYPES.join(', ')}, got ${shown(n.dataType)}` });
      continue;
    }
    const dataType = n.dataType as OpcuaDataType;
    if (s && !CARRIES[s.type].includes(dataType))
      problems.push({ path: `${path}.dataType`, message: `${dataType} cannot carry a ${s.type} value (use ${CARRIES[s.type].join(', ')})` });
    const range = INTEGER_TYPES[dataType];
    if (!range) continue;
    const all: [string, unknown][] = [
      [at('values', key), doc.values[key]],
      ...Object.entries(doc.overrides).map(([id, o]): [string, unknown] => [at(at('overrides', id), key), o[key]]),
    ];
    for (const [p, v] of all)
      if (typeof v === 'number' && (v < range[0] || v > range[1]))
        problems.push({ path: p, message: `${v} does not fit ${dataType} (${range[0]} to ${range[1]})` });
  }
}

const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Keys named __proto__, constructor or prototype in the document's maps
 * (values, schema, overrides and their keys, nodes, selector labels). Read
 * from the input's own keys: a parsed record would silently lose __proto__.
 */
function reservedKeyProblems(input: unknown): ProfileProblem[] {
  if (!isMap(input)) return [];
  const problems: ProfileProblem[] = [];
  const look = (path: string, map: unknown, inner?: (path: string, v: unknown) => void) => {
    if (!isMap(map)) return;
    for (const key of Object.keys(map)) {
      if (RESERVED_KEYS.includes(key)) problems.push({ path: at(path, key), message: RESERVED_MESSAGE });
      else inner?.(at(path, key), map[key]);
    }
  };
  look('values', input.values);
  look('schema', input.schema);
  look('nodes', input.nodes);
  look('overrides', input.overrides, (path, v) => look(path, v));
  if (isMap(input.selector)) look('selector.labels', input.selector.labels);
  return problems;
}

/**
 * Validates a profile document (parsed JSON or YAML): unknown keys are
 * errors, every problem is reported with its path. Throws
 * ProfileInvalidError; answers the document with its defaults applied.
 */
export function validateProfile(input: unknown): ProfileDocument {
  const reserved = reservedKeyProblems(input);
  const parsed = documentSchema.safeParse(input);
  if (!parsed.success || reserved.length > 0) {
    throw new ProfileInvalidError([
      ...reserved,
      ...(parsed.error?.issues ?? []).map((i) => ({
        path: i.path.length
          ? i.path
              .map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))
              .join('.')
              .replace(/\.\[/g, '[')
          : '(document)',
        message: i.message,
      })),
    ]);
  }
  const doc = parsed.data;
  const problems: ProfileProblem[] = [];
  const schema = doc.schema as Record<string, ValueSchema>;
  checkSchema(schema, problems);
  checkValues('values', doc.values, schema, problems);
  for (const [key, s] of Object.entries(schema))
    if (s.required && doc.values[key] === undefined) problems.push({ path: at('values', key), message: `${key} is required by the schema and missing` });
  for (const [id, o] of Object.entries(doc.overrides)) checkValues(at('overrides', id), o, schema, problems);
  checkNodes(doc, problems);
  if (problems.length > 0) throw new ProfileInvalidError(problems);
  return {
    name: doc.name,
    protocol: doc.protocol,
    ...(doc.description !== undefined ? { description: doc.description } : {}),
    priority: doc.priority,
    ...(doc.selector ? { selector: doc.selector } : {}),
    schema,
    values: doc.values as Record<string, Scalar>,
    overrides: doc.overrides as Record<string, Record<string, Scalar>>,
    ...(doc.nodes ? { nodes: doc.nodes as Record<string, OpcuaNodeBinding> } : {}),
    reapplyOnDrift: doc.reapplyOnDrift ?? false,
  };
}

/** Reads a profile file's text (YAML, of which JSON is a part); a syntax error is a problem at its line. */
export function parseProfileText(text: string): unknown {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0)
    throw new ProfileInvalidError(doc.errors.map((e) => ({ path: `(syntax, line ${e.linePos?.[0].line ?? '?'})`, message: e.message.split('\n')[0]! })));
  return doc.toJSON() as unknown;
}

/** JSON with object keys sorted at every level: the same values always give the same text, and so the same SHA-256. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object')
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

export const sha256Hex = (text: string): string => createHash('sha256').update(text).digest('hex');

/** The SHA-256 of a set of values as DesiredConfig carries it. */
export const valuesSha256 = (values: Record<string, JsonValue>): string => sha256Hex(canonicalJson(values));
