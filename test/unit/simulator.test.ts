import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../agent/errors.js';
import { DEVICE_ID, deviceId, validateOptions, type SimulationOptions } from '../../scripts/simulate/mqttDevices.js';
import { formatSummary, parseArguments } from '../../scripts/simulate/mqttDevicesCli.js';
import { canonicalJson, parseDesired, refuses } from '../../scripts/simulate/configDevice.js';
import { tempDir } from '../helpers/daemon.js';

describe('simulated device ids', () => {
  it('pads the index to five digits after the prefix', () => {
    expect(deviceId('sim-', 0)).toBe('sim-00000');
    expect(deviceId('sim-', 42)).toBe('sim-00042');
    expect(deviceId('', 7)).toBe('00007');
  });

  it('keeps every digit past 99999, so ids stay unique', () => {
    expect(deviceId('sim-', 123456)).toBe('sim-123456');
  });

  it('makes ids the agent accepts', () => {
    for (const id of [deviceId('sim-', 0), deviceId('line_3.cell-2-', 99999)]) expect(id).toMatch(DEVICE_ID);
  });
});

describe('simulation options', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: string;
  beforeAll(() => {
    tmp = tempDir();
    ca = join(tmp.dir, 'ca.pem');
    writeFileSync(ca, '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n');
  });
  afterAll(() => tmp.cleanup());

  const good = (): SimulationOptions => ({ provisioningUrl: 'mqtts://127.0.0.1:8883', caFile: ca });

  it('accepts the defaults with a TLS listener and a CA bundle', () => {
    expect(validateOptions(good())).toEqual([]);
  });

  it('needs no CA bundle for a plain listener when the mutual-TLS step is skipped', () => {
    expect(validateOptions({ provisioningUrl: 'mqtt://127.0.0.1:1883', skipMtls: true })).toEqual([]);
  });

  it('takes an option given as undefined as its default', () => {
    expect(validateOptions({ ...good(), count: undefined, topicPrefix: undefined })).toEqual([]);
  });

  it.each([
    ['a provisioning URL that is not MQTT', { provisioningUrl: 'http://127.0.0.1:8883' }, /provisioning URL must start with mqtt:\/\/ or mqtts:\/\//],
    ['a provisioning URL that is not a URL', { provisioningUrl: 'localhost:8883' }, /provisioning URL must start with/],
    ['a provisioning URL without a host', { provisioningUrl: 'mqtt://' }, /has no host/],
    ['a plain mutual-TLS URL', { mtlsUrl: 'mqtt://127.0.0.1:8884' }, /mutual-TLS URL must start with mqtts:\/\//],
    ['TLS without a CA bundle', { caFile: undefined }, /CA bundle \(--ca FILE\) is needed/],
    [
      'a plain listener without a CA bundle, mutual TLS to follow',
      { provisioningUrl: 'mqtt://127.0.0.1:1883', caFile: undefined },
      /CA bundle \(--ca FILE\) is needed/,
    ],
    ['a CA bundle that does not exist', { caFile: '/nonexistent/ca.pem' }, /\/nonexistent\/ca.pem does not exist/],
    ['no devices', { count: 0 }, /device count must be an integer from 1/],
    ['a fractional count', { count: 1.5 }, /device count must be an integer/],
    ['a concurrency of zero', { concurrency: 0 }, /concurrency must be an integer from 1/],
    ['a negative start index', { startIndex: -1 }, /start index must be an integer from 0/],
    ['a timeout too short to connect', { timeoutMs: 10 }, /per-device timeout must be an integer from 100/],
    ['an id prefix with a space', { idPrefix: 'sim 1-' }, /may hold only letters, digits/],
    ['an id prefix with a slash (a topic level)', { idPrefix: 'a/b-' }, /may hold only letters, digits/],
    ['ids longer than 64 characters', { idPrefix: 'x'.repeat(60) }, /at most 64 characters/],
    ['a topic prefix with a wildcard', { topicPrefix: 'edge/+/v1' }, /without wildcards/],
    ['a topic prefix with an empty level', { topicPrefix: 'edge//v1' }, /without wildcards/],
    ['a topic prefix ending in a slash', { topicPrefix: 'edge/prov/' }, /without wildcards/],
    ['an empty token', { token: '' }, /token is empty/],
    ['an empty model', { model: '' }, /model must be 1 to 64/],
    ['MQTT 3.1', { protocolVersion: 3 as 4 }, /protocol version is 4 or 5/],
    ['no worker thread', { workers: 0 }, /number of worker threads must be an integer from 1 to 64/],
    ['more worker threads than allowed', { workers: 65 }, /number of worker threads must be an integer from 1 to 64/],
    ['a negative number of reconnections', { reconnects: -1 }, /number of reconnections must be an integer from 0/],
    ['reconnections without the mutual-TLS step', { reconnects: 2, skipMtls: true }, /reconnecting needs the mutual-TLS connection/],
    ['devices taking configuration in several threads', { workers: 2, configuration: {} }, /run in one thread: leave out --workers/],
  ] as [string, Partial<SimulationOptions>, RegExp][])('refuses %s', (_name, change, message) => {
    const problems = validateOptions({ ...good(), ...change });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(message);
  });

  it('reports every problem at once', () => {
    expect(validateOptions({ provisioningUrl: 'http://x', count: 0, concurrency: 0, idPrefix: '#' })).toHaveLength(5);
  });
});

describe('mqtt-devices command line', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: string;
  beforeAll(() => {
    tmp = tempDir();
    ca = join(tmp.dir, 'ca.pem');
    writeFileSync(ca, '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n');
    writeFileSync(join(tmp.dir, 'token'), 'tok-from-file\nignored\n');
  });
  afterAll(() => tmp.cleanup());

  const parse = (...args: string[]) => parseArguments(args, { writeOut: () => {}, writeErr: () => {} });
  const usage = (...args: string[]): string => {
    try {
      parse(...args);
    } catch (err) {
      expect(err).toBeInstanceOf(UsageError);
      return (err as Error).message;
    }
    throw new Error('no UsageError');
  };

  it('leaves unset options to the library defaults', () => {
    expect(parse('--provisioning-url', 'mqtts://127.0.0.1:8883', '--ca', ca)).toEqual({
      options: { provisioningUrl: 'mqtts://127.0.0.1:8883', caFile: ca, protocolVersion: 4, waitForApproval: true, skipMtls: false },
      json: false,
    });
  });

  it('maps every option', () => {
    const line = parse(
      '--provisioning-url',
      'mqtt://127.0.0.1:1883',
      '--ca',
      ca,
      '--mtls-url',
      'mqtts://127.0.0.1:8884',
      '-n',
      '250',
      '--concurrency',
      '25',
      '--id-prefix',
      'line1-',
      '--start-index',
      '1000',
      '--topic-prefix',
      'plant/prov',
      '--token',
      'tok',
      '--manufacturer',
      'ACME',
      '--model',
      'X-2',
      '--mqtt5',
      '--timeout-ms',
      '5000',
      '--no-wait',
      '--skip-mtls',
      '--out',
      join(tmp.dir, 'out'),
      '--json',
    );
    expect(line).toEqual({
      options: {
        provisioningUrl: 'mqtt://127.0.0.1:1883',
        caFile: ca,
        mtlsUrl: 'mqtts://127.0.0.1:8884',
        count: 250,
        concurrency: 25,
        idPrefix: 'line1-',
        startIndex: 1000,
        topicPrefix: 'plant/prov',
        token: 'tok',
        manufacturer: 'ACME',
        model: 'X-2',
        protocolVersion: 5,
        timeoutMs: 5000,
        waitForApproval: false,
        skipMtls: true,
        outDir: join(tmp.dir, 'out'),
      },
      json: true,
    });
  });

  it('maps the load options: worker threads, keys made beforehand, reconnections resuming TLS', () => {
    expect(
      parse('--provisioning-url', 'mqtts://h:1', '--ca', ca, '--workers', '4', '--pregenerate', '--reconnects', '3', '--resume-tls')?.options,
    ).toMatchObject({
      workers: 4,
      pregenerate: true,
      reconnects: 3,
      resumeTls: true,
    });
    let text = '';
    parseArguments(['--help'], { writeOut: (s) => (text += s) });
    for (const option of ['--workers <n>', '--pregenerate', '--reconnects <n>', '--resume-tls']) expect(text).toContain(option);
  });

  it('refuses --workers 0 and --reconnects with --skip-mtls', () => {
    expect(usage('--provisioning-url', 'mqtts://h:1', '--ca', ca, '--workers', '0')).toMatch(/worker threads must be an integer from 1/);
    expect(usage('--provisioning-url', 'mqtts://h:1', '--ca', ca, '--reconnects', '1', '--skip-mtls')).toMatch(/reconnecting needs the mutual-TLS/);
  });

  it('summarises threads, keys made beforehand, reconnections and resumed sessions', () => {
    const summary = formatSummary({
      devices: [
        { id: 'sim-00000', status: 'issued', enrolledMs: 10, connectedMs: 5, reconnectedMs: [3, 4], resumed: 2 },
        { id: 'sim-00001', status: 'issued', enrolledMs: 20, connectedMs: 6, reconnectedMs: [5, 6], resumed: 1 },
      ],
      counts: { issued: 2, pending: 0, rejected: 0, failed: 0 },
      durationMs: 1000,
      enrollmentsPerSecond: 2,
      workers: 2,
      prepareMs: 1500,
    });
    expect(summary.split('\n')).toEqual([
      '2 device(s) in 1.0 s: 2 issued, 0 pending, 0 rejected, 0 failed; 2.0 enrollments/s',
      '2 thread(s); keys and CSRs made beforehand in 1.5 s, outside the time',
      'enrollment: p50 20 ms, p95 20 ms, max 20 ms',
      'mutual-TLS hello: p50 6 ms, p95 6 ms, max 6 ms',
      'reconnection: p50 5 ms, p95 6 ms, max 6 ms',
      'TLS session resumed on 3 of 4 reconnection(s)',
      '',
    ]);
  });

  it('reads the token from the first line of --token-file', () => {
    expect(parse('--provisioning-url', 'mqtts://h:1', '--ca', ca, '--token-file', join(tmp.dir, 'token'))?.options.token).toBe('tok-from-file');
  });

  it('returns nothing after printing --help', () => {
    let text = '';
    expect(parseArguments(['--help'], { writeOut: (s) => (text += s) })).toBeUndefined();
    expect(text).toMatch(/--provisioning-url <url>/);
    expect(text).toMatch(/64 +bad command line/);
  });

  it.each([
    ['a missing --provisioning-url', ['--ca', 'x'], /required option '--provisioning-url <url>'/],
    ['a count that is not a number', ['--provisioning-url', 'mqtts://h:1', '--count', 'ten'], /--count <n>' argument 'ten' is invalid/],
    ['a negative count', ['--provisioning-url', 'mqtts://h:1', '--count', '-3'], /--count <n>' argument '-3' is invalid. It must be a whole number/],
    ['a timeout in seconds', ['--provisioning-url', 'mqtts://h:1', '--timeout-ms', '2.5'], /--timeout-ms <ms>' argument '2.5' is invalid/],
    ['an unknown option', ['--provisioning-url', 'mqtts://h:1', '--verbose'], /unknown option '--verbose'/],
    ['a stray argument', ['--provisioning-url', 'mqtts://h:1', 'extra'], /too many arguments/],
    [
      'both --token and --token-file',
      ['--provisioning-url', 'mqtts://h:1', '--token', 'a', '--token-file', '/etc/hostname'],
      /at most one of --token and --token-file/,
    ],
    ['a --token-file that does not exist', ['--provisioning-url', 'mqtts://h:1', '--token-file', '/nonexistent/token'], /\/nonexistent\/token does not exist/],
    [
      'a CA bundle that does not exist',
      ['--provisioning-url', 'mqtts://h:1', '--ca', '/nonexistent/ca.pem'],
      /^the CA bundle \/nonexistent\/ca.pem does not exist$/,
    ],
  ])('refuses %s', (_name, args, message) => {
    expect(usage(...args)).toMatch(message);
  });

  it('lists several problems one per line', () => {
    const message = usage('--provisioning-url', 'http://h:1', '--count', '0');
    expect(message.split('\n')).toEqual([
      '3 problems:',
      expect.stringMatching(/^ {2}- the provisioning URL must start with/),
      expect.stringMatching(/^ {2}- the device count must be/),
      expect.stringMatching(/^ {2}- a CA bundle/),
    ]);
  });
});

describe('taking configuration (--take-config)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: string;
  beforeAll(() => {
    tmp = tempDir();
    ca = join(tmp.dir, 'ca.pem');
    writeFileSync(ca, '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n');
  });
  afterAll(() => tmp.cleanup());
  const parse = (...args: string[]) => parseArguments(['--provisioning-url', 'mqtts://h:1', '--ca', ca, ...args], { writeOut: () => {}, writeErr: () => {} });

  it('maps --take-config and its options, a fraction or a list of ids', () => {
    expect(parse('--take-config', '--config-topic-root', 'cfg', '--refuse-config', '0.25', '--refuse-error', 'no')?.options.configuration).toEqual({
      topicRoot: 'cfg',
      refuse: 0.25,
      refuseError: 'no',
    });
    expect(parse('--take-config', '--refuse-config', 'sim-00001,sim-00003')?.options.configuration).toEqual({ refuse: ['sim-00001', 'sim-00003'] });
    expect(parse('--take-config')?.options.configuration).toEqual({});
  });

  it.each([
    ['--refuse-config without --take-config', ['--refuse-config', '0.5'], /go with --take-config/],
    ['--skip-mtls with --take-config', ['--take-config', '--skip-mtls'], /leave out --skip-mtls/],
    ['a topic root of two levels', ['--take-config', '--config-topic-root', 'a/b'], /one topic level/],
    ['a refusing id that is not a device id', ['--take-config', '--refuse-config', 'a b'], /not a device id/],
  ])('refuses %s', (_name, args, message) => {
    expect(() => parse(...args)).toThrow(message);
  });

  it('lists the options in --help', () => {
    let text = '';
    parseArguments(['--help'], { writeOut: (s) => (text += s) });
    expect(text).toMatch(/--take-config/);
    expect(text).toMatch(/--refuse-config <ids\|fraction>/);
  });

  it('picks a fraction of the devices spread over the run, and ids by name', () => {
    const picked = Array.from({ length: 20 }, (_, i) => refuses(0.25, `d${i}`, i)).filter(Boolean);
    expect(picked).toHaveLength(5);
    expect(refuses(0, 'd0', 0)).toBe(false);
    expect(Array.from({ length: 7 }, (_, i) => refuses(1, `d${i}`, i)).every(Boolean)).toBe(true);
    expect(refuses(['d3'], 'd3', 0)).toBe(true);
    expect(refuses(['d3'], 'd4', 3)).toBe(false);
  });

  it('hashes the values as canonical JSON: keys sorted at every level, no white space', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { f: true, e: null }], c: 'x' } })).toBe('{"a":{"c":"x","d":[3,{"e":null,"f":true}]},"b":1}');
  });

  it.each([
    ['not JSON', '{', /not JSON/],
    ['no sha256', '{"profile":"p","version":1,"values":{}}', /no sha256/],
    ['values that are a list', `{"profile":"p","version":1,"sha256":"${'a'.repeat(64)}","values":[]}`, /no values object/],
  ])('reads a desired message with %s as malformed', (_name, text, problem) => {
    expect(parseDesired(Buffer.from(text))).toMatch(problem);
  });
});
