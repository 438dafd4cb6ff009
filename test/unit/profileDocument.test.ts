import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configRoutes } from '../../agent/api/configRoutes.js';
import { canonicalJson, parseProfileText, ProfileInvalidError, validateProfile, valuesSha256 } from '../../agent/configuration/profileDocument.js';
import { diffProfiles, resolveDesired, type HeadProfile } from '../../agent/configuration/resolve.js';
import { bestMatch, selects, type SelectorSubject } from '../../agent/configuration/selector.js';
import type { Device } from '../../agent/inventory/device.js';
import { REPO } from '../helpers/daemon.js';

const mqtt = {
  name: 'vib',
  protocol: 'mqtt',
  selector: { manufacturer: 'acme*' },
  schema: { threshold: { type: 'number', minimum: 0, maximum: 100 }, mode: { type: 'string', enum: ['rms', 'peak'] }, rate: { type: 'integer' } },
  values: { threshold: 4.5, mode: 'rms', rate: 10 },
};
const opcua = {
  name: 'press',
  protocol: 'opcua',
  schema: { speed: { type: 'integer', minimum: 0 }, enabled: { type: 'boolean' } },
  values: { speed: 120, enabled: true },
  nodes: { speed: { nodeId: 'ns=2;s=Press.Speed', dataType: 'UInt16' }, enabled: { nodeId: 'ns=2;i=1002', dataType: 'Boolean' } },
  reapplyOnDrift: true,
};

/** The problems a document has, as `path: message`. */
function problems(doc: unknown): string[] {
  try {
    validateProfile(doc);
    return [];
  } catch (err) {
    if (!(err instanceof ProfileInvalidError)) throw err;
    return err.problems.map((p) => `${p.path}: ${p.message}`);
  }
}

describe('profile documents', () => {
  it('takes a full MQTT and OPC UA profile, with defaults applied', () => {
    expect(validateProfile(mqtt)).toMatchObject({ name: 'vib', priority: 0, overrides: {}, reapplyOnDrift: false });
    expect(validateProfile(opcua)).toMatchObject({ name: 'press', reapplyOnDrift: true, nodes: { speed: { dataType: 'UInt16' } } });
  });

  it.each([
    ['an unknown top-level key', { ...mqtt, colour: 'red' }, /\(document\): Unrecognized key.*colour/],
    ['a bad name', { ...mqtt, name: 'Vib Profile' }, /^name: lower-case/],
    ['an unknown protocol', { ...mqtt, protocol: 'modbus' }, /^protocol: /],
    ['a priority that is not whole', { ...mqtt, priority: 1.5 }, /^priority: /],
    ['an unknown selector field', { ...mqtt, selector: { vendor: 'x' } }, /^selector: Unrecognized key.*vendor/],
    ['an unknown schema type', { ...mqtt, schema: { ...mqtt.schema, x: { type: 'float' } } }, /^schema\.x\.type: /],
    ['an unknown schema keyword', { ...mqtt, schema: { ...mqtt.schema, x: { type: 'number', min: 1 } } }, /^schema\.x: Unrecognized key.*min/],
    ['minimum on a string', { ...mqtt, schema: { ...mqtt.schema, x: { type: 'string', minimum: 1 } } }, /^schema\.x: minimum and maximum apply to number/],
    ['maxLength on a number', { ...mqtt, schema: { ...mqtt.schema, x: { type: 'number', maxLength: 3 } } }, /^schema\.x: maxLength applies to string/],
    [
      'minimum above maximum',
      { ...mqtt, schema: { ...mqtt.schema, x: { type: 'number', minimum: 5, maximum: 1 } } },
      /^schema\.x: minimum 5 is above maximum 1/,
    ],
    [
      'an enum entry of another type',
      { ...mqtt, schema: { ...mqtt.schema, x: { type: 'integer', enum: [1, 'two'] } } },
      /^schema\.x\.enum\[1\]: expected integer, got string "two"/,
    ],
    ['a value not declared', { ...mqtt, values: { ...mqtt.values, colour: 'red' } }, /^values\.colour: colour is not declared in schema/],
    ['a string for a number', { ...mqtt, values: { ...mqtt.values, threshold: '4.5' } }, /^values\.threshold: expected number, got string "4.5"/],
    ['a fraction for an integer', { ...mqtt, values: { ...mqtt.values, rate: 2.5 } }, /^values\.rate: expected integer, got number 2.5/],
    ['a value below its minimum', { ...mqtt, values: { ...mqtt.values, threshold: -1 } }, /^values\.threshold: expected at least 0, got -1/],
    ['a value above its maximum', { ...mqtt, values: { ...mqtt.values, threshold: 101 } }, /^values\.threshold: expected at most 100, got 101/],
    ['a value outside its enum', { ...mqtt, values: { ...mqtt.values, mode: 'avg' } }, /^values\.mode: expected one of "rms", "peak", got "avg"/],
    ['an object as a value', { ...mqtt, values: { ...mqtt.values, mode: { a: 1 } } }, /^values\.mode: expected string, got object/],
    ['a required value missing', { ...mqtt, schema: { ...mqtt.schema, unit: { type: 'string', required: true } } }, /^values\.unit: unit is required/],
    [
      'a string over its maxLength',
      { ...mqtt, schema: { ...mqtt.schema, mode: { type: 'string', maxLength: 2 } } },
      /^values\.mode: expected at most 2 characters, got 3/,
    ],
    [
      'an override of the wrong type',
      { ...mqtt, overrides: { 'mqtt:s1': { rate: 'fast' } } },
      /^overrides\["mqtt:s1"\]\.rate: expected integer, got string "fast"/,
    ],
    ['an override not declared', { ...mqtt, overrides: { 'mqtt:s1': { gain: 2 } } }, /^overrides\["mqtt:s1"\]\.gain: gain is not declared/],
    ['nodes on an MQTT profile', { ...mqtt, nodes: { rate: { nodeId: 'ns=1;i=1', dataType: 'Int32' } } }, /^nodes: nodes apply to opcua profiles only/],
    ['reapplyOnDrift on an MQTT profile', { ...mqtt, reapplyOnDrift: true }, /^reapplyOnDrift: reapplyOnDrift applies to opcua/],
    ['an OPC UA value without a node', { ...opcua, nodes: { speed: opcua.nodes.speed } }, /^nodes\.enabled: no node for value enabled/],
    [
      'a NodeId that is not one',
      { ...opcua, nodes: { ...opcua.nodes, speed: { nodeId: 'Press.Speed', dataType: 'UInt16' } } },
      /^nodes\.speed\.nodeId: not a NodeId: expected ns=<n>;i=/,
    ],
    [
      'a numeric NodeId with letters',
      { ...opcua, nodes: { ...opcua.nodes, speed: { nodeId: 'ns=2;i=12a', dataType: 'UInt16' } } },
      /^nodes\.speed\.nodeId: not a NodeId/,
    ],
    [
      'an unknown data type',
      { ...opcua, nodes: { ...opcua.nodes, speed: { nodeId: 'ns=2;i=5', dataType: 'Integer' } } },
      /^nodes\.speed\.dataType: expected one of Boolean, SByte/,
    ],
    [
      'a data type that cannot carry the value',
      { ...opcua, nodes: { ...opcua.nodes, enabled: { nodeId: 'ns=2;i=5', dataType: 'Double' } } },
      /^nodes\.enabled\.dataType: Double cannot carry a boolean/,
    ],
    ['a value outside its data type', { ...opcua, values: { ...opcua.values, speed: 70000 } }, /^values\.speed: 70000 does not fit UInt16/],
    [
      'a node for a key not declared',
      { ...opcua, nodes: { ...opcua.nodes, extra: { nodeId: 'ns=2;i=5', dataType: 'Double' } } },
      /^nodes\.extra: extra is not declared/,
    ],
  ])('refuses %s, saying where and what', (_what, doc, expected) => {
    const found = problems(doc);
    expect(
      found.some((p) => expected.test(p)),
      found.join('\n'),
    ).toBe(true);
  });

  it('reports every problem at once', () => {
    const found = problems({ ...mqtt, values: { threshold: 'x', mode: 'avg', rate: 1.5 } });
    expect(found).toHaveLength(3);
  });

  it('reads YAML and JSON files; a syntax error or a duplicate key names its line', () => {
    expect(parseProfileText('name: vib\nprotocol: mqtt\nschema: {}\n')).toEqual({ name: 'vib', protocol: 'mqtt', schema: {} });
    expect(parseProfileText(JSON.stringify(mqtt))).toEqual(mqtt);
    expect(() => parseProfileText('name: vib\nname: other\n')).toThrow(/line 2/);
  });

  it('hashes values by their canonical JSON: key order does not matter', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, 2], c: 'x' } })).toBe('{"a":{"c":"x","d":[1,2]},"b":1}');
    expect(valuesSha256({ a: 1, b: 2 })).toBe(valuesSha256({ b: 2, a: 1 }));
    expect(valuesSha256({ a: 1 })).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('reserved keys and numbers that are not finite', () => {
  const yaml = (text: string) => problems(parseProfileText(`name: x\nprotocol: mqtt\n${text}`));
  const base = 'schema: {a: {type: number}}\n';
  it.each([
    [
      'a value named __proto__ (JSON)',
      () => problems(JSON.parse('{"name":"x","protocol":"mqtt","schema":{"a":{"type":"number"}},"values":{"__proto__":5,"a":1}}')),
      'values.__proto__: a reserved name',
    ],
    ['a value named __proto__ (YAML)', () => yaml(`${base}values: {__proto__: 5, a: 1}`), 'values.__proto__: a reserved name'],
    ['a value named constructor', () => yaml(`${base}values: {constructor: 5}`), 'values.constructor: a reserved name'],
    ['a schema entry named prototype', () => yaml('schema: {prototype: {type: number}}'), 'schema.prototype: a reserved name'],
    ['a schema entry named __proto__', () => yaml('schema: {__proto__: {type: number}}'), 'schema.__proto__: a reserved name'],
    ['an override for a device named __proto__', () => yaml(`${base}overrides: {__proto__: {a: 2}}`), 'overrides.__proto__: a reserved name'],
    ['an override key named constructor', () => yaml(`${base}overrides: {"mqtt:p": {constructor: 2}}`), 'overrides["mqtt:p"].constructor: a reserved name'],
    [
      'a node named __proto__',
      () => problems(parseProfileText('name: x\nprotocol: opcua\nschema: {}\nnodes: {__proto__: {nodeId: "ns=1;i=1", dataType: Float}}')),
      'nodes.__proto__: a reserved name',
    ],
    ['a selector label named prototype', () => yaml(`${base}selector: {labels: {prototype: x}}`), 'selector.labels.prototype: a reserved name'],
    ['a value of .inf', () => yaml(`${base}values: {a: .inf}`), 'values.a: expected a finite number, got Infinity (YAML .inf)'],
    [
      'a value of -.inf for an integer',
      () => yaml('schema: {a: {type: integer}}\nvalues: {a: -.inf}'),
      'values.a: expected a finite integer, got -Infinity (YAML -.inf)',
    ],
    ['a value of .nan', () => yaml(`${base}values: {a: .nan}`), 'values.a: expected a finite number, got NaN (YAML .nan)'],
    ['a string value of .inf', () => yaml('schema: {a: {type: string}}\nvalues: {a: .inf}'), 'values.a: expected string, got number Infinity (YAML .inf)'],
    ['a maximum of .inf', () => yaml('schema: {a: {type: number, maximum: .inf}}'), 'schema.a.maximum: expected a finite number, got Infinity (YAML .inf)'],
    ['a minimum of .nan', () => yaml('schema: {a: {type: number, minimum: .nan}}'), 'schema.a.minimum: expected a finite number, got NaN (YAML .nan)'],
    ['an enum member of .nan', () => yaml('schema: {a: {type: number, enum: [1, .nan]}}'), 'schema.a.enum[1]'],
  ])('refuses %s, saying so', (_name, run, expected) => {
    const found = run();
    expect(
      found.some((p) => p.startsWith(expected)),
      found.join('\n'),
    ).toBe(true);
  });

  it('keeps other keys that merely contain those words', () => {
    expect(
      validateProfile({
        name: 'x',
        protocol: 'mqtt',
        schema: {
          proto: { type: 'number' },
          constructor_id: { type: 'number' },
        },
        values: { proto: 1, constructor_id: 2 },
      }).values,
    ).toEqual({
      proto: 1,
      constructor_id: 2,
    });
  });
});

describe('selectors and the desired state', () => {
  const subject = (over: Partial<SelectorSubject> = {}): SelectorSubject => ({
    protocol: 'mqtt',
    manufacturer: 'Acme Sensors',
    model: 'V-100',
    location: { site: 'plant-1', area: 'A', line: 'L3' },
    labels: { zone: 'hot' },
    ...over,
  });
  it.each([
    ['no selector', undefined, false],
    ['an empty selector', {}, false],
    ['a manufacturer pattern, any case', { manufacturer: 'ACME*' }, true],
    ['a model with ?', { model: 'V-1?0' }, true],
    ['a model that differs', { model: 'V-2*' }, false],
    ['a location field', { location: { line: 'L3' } }, true],
    ['a location field the device lacks', { location: { cell: 'C1' } }, false],
    ['a label', { labels: { zone: 'h*' } }, true],
    ['a label the device lacks', { labels: { floor: '*' } }, false],
    ['all given fields, one failing', { manufacturer: 'acme*', model: 'X' }, false],
  ])('%s', (_what, selector, expected) => {
    expect(selects(selector, subject())).toBe(expected);
  });

  it('picks the highest priority, then the first name; only profiles of the protocol', () => {
    const p = (name: string, priority: number, protocol: 'mqtt' | 'opcua' = 'mqtt') => ({ name, priority, protocol, selector: { manufacturer: 'acme*' } });
    expect(bestMatch([p('b', 1), p('a', 1), p('c', 0)], subject())?.name).toBe('a');
    expect(bestMatch([p('b', 1), p('z', 5)], subject())?.name).toBe('z');
    expect(bestMatch([p('o', 9, 'opcua')], subject())).toBeUndefined();
  });

  it('gives nothing to a device not provisioned; a pin wins; overrides change the values and so the sha256', () => {
    const head = (doc: unknown, version = 1): HeadProfile => {
      const document = validateProfile(doc);
      return { name: document.name, version, document };
    };
    const heads = [head({ ...mqtt, overrides: { 'mqtt:s1': { threshold: 9 } } }), head({ ...mqtt, name: 'other', selector: undefined }, 3)];
    const device = { id: 'mqtt:s1', protocol: 'mqtt', name: 's1', state: 'provisioned', nameplate: { manufacturer: 'Acme' } } as Device;
    expect(resolveDesired({ ...device, state: 'pending' }, undefined, {}, heads, {})).toBeNull();
    expect(resolveDesired(device, undefined, {}, heads, {})).toEqual({
      profile: 'vib',
      version: 1,
      sha256: valuesSha256({ threshold: 9, mode: 'rms', rate: 10 }),
    });
    expect(resolveDesired({ ...device, id: 'mqtt:s2' }, undefined, {}, heads, {})!.sha256).toBe(valuesSha256({ threshold: 4.5, mode: 'rms', rate: 10 }));
    expect(resolveDesired(device, 'other', {}, heads, {})).toMatchObject({ profile: 'other', version: 3 });
    // The gateway's location stands in for fields the device lacks.
    const located = [head({ ...mqtt, selector: { location: { site: 'plant-*' } } })];
    expect(resolveDesired(device, undefined, {}, located, { site: 'plant-1' })).toMatchObject({ profile: 'vib' });
  });

  it('diffs two versions: fields and value changes, overrides by device', () => {
    const a = validateProfile(mqtt);
    const b = validateProfile({ ...mqtt, priority: 2, values: { ...mqtt.values, threshold: 6 }, overrides: { 'mqtt:s1': { rate: 5 } } });
    expect(diffProfiles(a, b)).toEqual({
      fields: ['priority'],
      values: [
        { key: 'threshold', from: 4.5, to: 6 },
        { key: 'rate', device: 'mqtt:s1', to: 5 },
      ],
    });
  });
});

describe('docs/device-configuration.md', () => {
  it('has an example profile for each protocol, and each is valid', () => {
    const page = readFileSync(join(REPO, 'docs', 'device-configuration.md'), 'utf8');
    const doc = page.slice(page.indexOf('## Profiles'), page.indexOf('## Status of a device'));
    const examples = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => validateProfile(parseProfileText(m[1]!)));
    expect(examples.map((e) => e.protocol).sort()).toEqual(['mqtt', 'opcua']);
  });
});

describe('the configuration routes with configuration.enabled false', () => {
  it('answer changes with 409 CONFIGURATION_OFF, after checking the document', async () => {
    const routes = configRoutes({ config: () => ({}) as never, repos: {} as never });
    const route = routes.find((r) => r.method === 'POST' && r.path === '/api/v1/config-profiles')!;
    const ctx = (body: unknown) => ({ body: async () => body, user: { name: 'a' } }) as never;
    await expect(route.handle(ctx(mqtt))).rejects.toMatchObject({ code: 'CONFIGURATION_OFF', status: 409 });
    await expect(route.handle(ctx({ ...mqtt, values: { threshold: 'x' } }))).rejects.toMatchObject({ code: 'PROFILE_INVALID', status: 400 });
  });
});
