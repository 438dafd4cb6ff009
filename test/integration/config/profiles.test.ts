import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../agent/config/load.js';
import { Store } from '../../../agent/store/database.js';
import { DeviceRepository } from '../../../agent/store/deviceRepository.js';
import { apiUser } from '../../helpers/apiUser.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';

/** An answer body, read loosely: each test says what it expects of it. */
// biome-ignore lint/suspicious/noExplicitAny: answers are checked with toMatchObject, field by field
type Body = Record<string, any>;

const vib = (threshold: number, extra: Record<string, unknown> = {}) => ({
  name: 'vib',
  protocol: 'mqtt',
  description: 'vibration alert threshold',
  selector: { manufacturer: 'acme*' },
  schema: { threshold: { type: 'number', minimum: 0, maximum: 50 }, mode: { type: 'string', enum: ['rms', 'peak'] } },
  values: { threshold, mode: 'rms' },
  ...extra,
});

describe('configuration profiles through the real daemon (HTTP and CLI)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let base: string;
  let config: string;
  const tokens: Record<string, string> = {};
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const call = async (method: string, path: string, who = 'admin', body?: unknown): Promise<{ status: number; body: Body }> => {
    const r = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${tokens[who]}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: r.status, body: (await r.json()) as Body };
  };
  const configuration = async (id: string) => (await call('GET', `/api/v1/devices/${id}`)).body.configuration as Body;
  const audit = async () =>
    ((await call('GET', '/api/v1/audit?limit=200')).body.items as { action: string; target: string; actor: string }[]).map((e) => `${e.action} ${e.target}`);

  beforeAll(async () => {
    tmp = tempDir();
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-config',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        '  enabled: false',
        'sync:',
        '  enabled: false',
        '',
      ].join('\n'),
    );
    const { store } = Store.open(loadConfig({ file: config }).config.store, pino({ level: 'silent' }));
    const devices = new DeviceRepository(store);
    store.transaction(() => {
      for (const [name, manufacturer, to] of [
        ['s1', 'Acme Sensors', 'provisioned'],
        ['s2', 'Globex', 'provisioned'],
        ['p1', 'Acme Sensors', 'pending'],
      ] as const)
        devices.apply({ protocol: 'mqtt', name, to, cause: 'test', actor: 'test', patch: { nameplate: { manufacturer, model: 'V1' } } });
    });
    store.close();
    daemon = Daemon.start(config);
    base = await daemon.ready();
    tokens.admin = readFileSync(join(tmp.dir, 'data', 'admin.token'), 'utf8').trim();
    tokens.technician = await apiUser(config, 'tech-c', 'technician');
    tokens.viewer = await apiUser(config, 'viewer-c', 'viewer');
  }, 180_000);
  afterAll(async () => {
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('applies v1 (201), then the same document (200 unchanged); only the provisioned device it selects gets it, with a revision bump', async () => {
    const before = (await call('GET', '/api/v1/devices/mqtt:s1')).body.device.revision as number;
    const v1 = await call('POST', '/api/v1/config-profiles', 'admin', vib(4.5));
    expect(v1).toMatchObject({
      status: 201,
      body: { name: 'vib', outcome: 'created', version: 1, affected: [{ deviceId: 'mqtt:s1', from: null, to: { profile: 'vib', version: 1 } }] },
    });
    expect(await call('POST', '/api/v1/config-profiles', 'admin', vib(4.5))).toMatchObject({
      status: 200,
      body: { outcome: 'unchanged', version: 1, affected: [] },
    });
    expect(await configuration('mqtt:s1')).toMatchObject({ profile: 'vib', version: 1, pinned: null, status: 'pending', error: null, reportedVersion: null });
    expect((await call('GET', '/api/v1/devices/mqtt:s1')).body.device.revision).toBeGreaterThan(before);
    expect(await configuration('mqtt:p1')).toMatchObject({ profile: null, status: 'none' });
    expect(await configuration('mqtt:s2')).toMatchObject({ profile: null, status: 'none' });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/^edge_agent_device_config\{status="pending"\} 1$/m);
  });

  it('a dry run answers the diff and the devices affected and stores nothing; v2 is stored; diff and show name both', async () => {
    const dry = await call('POST', '/api/v1/config-profiles/dry-run', 'admin', vib(6));
    expect(dry).toMatchObject({
      status: 200,
      body: { dryRun: true, outcome: 'created', version: 2, previous: 1, diff: { fields: [], values: [{ key: 'threshold', from: 4.5, to: 6 }] } },
    });
    expect(dry.body.affected).toEqual([{ deviceId: 'mqtt:s1', from: { profile: 'vib', version: 1 }, to: { profile: 'vib', version: 2 } }]);
    expect((await call('GET', '/api/v1/config-profiles')).body.items).toMatchObject([{ name: 'vib', head: 1, latest: 1 }]);
    expect(await call('POST', '/api/v1/config-profiles', 'admin', vib(6))).toMatchObject({ status: 201, body: { version: 2 } });
    expect(await configuration('mqtt:s1')).toMatchObject({ version: 2, status: 'pending' });
    expect((await call('GET', '/api/v1/config-profiles/vib/diff?from=1&to=2')).body).toEqual({
      name: 'vib',
      from: 1,
      to: 2,
      fields: [],
      values: [{ key: 'threshold', from: 4.5, to: 6 }],
    });
    const shown = await call('GET', '/api/v1/config-profiles/vib?version=1');
    expect(shown.body).toMatchObject({ version: 1, head: 2, document: { values: { threshold: 4.5 } }, devices: { pending: 1 } });
    expect(shown.body.versions).toHaveLength(2);
    expect(await call('GET', '/api/v1/config-profiles/vib?version=9')).toMatchObject({ status: 404, body: { code: 'NO_SUCH_PROFILE' } });
  });

  it('rolls back to v1: the head moves, no version is made, the device is due v1 again', async () => {
    expect(await call('POST', '/api/v1/config-profiles/vib/rollback', 'admin', { version: 1 })).toMatchObject({
      status: 200,
      body: { from: 2, to: 1, outcome: 'moved' },
    });
    expect((await call('GET', '/api/v1/config-profiles')).body.items).toMatchObject([{ name: 'vib', head: 1, latest: 2 }]);
    expect(await configuration('mqtt:s1')).toMatchObject({ version: 1, status: 'pending' });
    expect(await call('POST', '/api/v1/config-profiles/vib/rollback', 'admin', { version: 5 })).toMatchObject({
      status: 404,
      body: { code: 'NO_SUCH_PROFILE' },
    });
  });

  it.each([
    ['a value of the wrong type', vib(4.5, { values: { threshold: 'high', mode: 'rms' } }), /values\.threshold: expected number, got string "high"/],
    ['a value over its maximum', vib(99), /values\.threshold: expected at most 50, got 99/],
    ['a bad override', vib(4.5, { overrides: { 'mqtt:s1': { mode: 'avg' } } }), /overrides\["mqtt:s1"\]\.mode: expected one of "rms", "peak", got "avg"/],
    ['an unknown key', { ...vib(4.5), colour: 'red' }, /colour/],
    [
      'an OPC UA NodeId that is not one',
      { name: 'press', protocol: 'opcua', schema: { s: { type: 'integer' } }, values: { s: 1 }, nodes: { s: { nodeId: 'Speed', dataType: 'Int32' } } },
      /nodes\.s\.nodeId: not a NodeId/,
    ],
  ])('refuses %s with 400 PROFILE_INVALID and stores nothing', async (_what, doc, message) => {
    const r = await call('POST', '/api/v1/config-profiles', 'admin', doc);
    expect(r).toMatchObject({ status: 400, body: { code: 'PROFILE_INVALID' } });
    expect(r.body.message).toMatch(message);
    expect((await call('GET', '/api/v1/config-profiles')).body.items).toMatchObject([{ name: 'vib', head: 1, latest: 2 }]);
  });

  it('pins and unpins a device, and selects by labels; permissions as the roles table says', async () => {
    expect(await call('PUT', '/api/v1/devices/mqtt:s2/config-profile', 'technician', { profile: 'vib' })).toMatchObject({
      status: 200,
      body: { pinned: 'vib', configuration: { profile: 'vib', desiredVersion: 1 } },
    });
    expect(await configuration('mqtt:s2')).toMatchObject({ profile: 'vib', pinned: 'vib', status: 'pending' });
    expect(await call('PUT', '/api/v1/devices/mqtt:s2/config-profile', 'technician', { profile: null })).toMatchObject({ status: 200, body: { pinned: null } });
    expect(await configuration('mqtt:s2')).toMatchObject({ profile: null, pinned: null, status: 'none' });
    expect(await call('PUT', '/api/v1/devices/mqtt:s2/config-profile', 'admin', { profile: 'nope' })).toMatchObject({
      status: 404,
      body: { code: 'NO_SUCH_PROFILE' },
    });
    const lab = {
      name: 'lab',
      protocol: 'mqtt',
      priority: 10,
      selector: { labels: { zone: 'hot*' } },
      schema: { threshold: { type: 'number' } },
      values: { threshold: 1 },
    };
    expect((await call('POST', '/api/v1/config-profiles', 'admin', lab)).status).toBe(201);
    expect(await call('PUT', '/api/v1/devices/mqtt:s2/labels', 'technician', { labels: { zone: 'hot-1' } })).toMatchObject({
      status: 200,
      body: { labels: { zone: 'hot-1' }, affected: [{ deviceId: 'mqtt:s2', to: { profile: 'lab', version: 1 } }] },
    });
    expect(await configuration('mqtt:s2')).toMatchObject({ profile: 'lab', labels: { zone: 'hot-1' } });
    expect((await call('PUT', '/api/v1/devices/mqtt:s2/labels', 'technician', { labels: { 'bad key': 'x' } })).status).toBe(400);
    // A "__proto__" key is refused by name, not dropped (which would have replaced the labels with { zone: 'hot-2' } alone).
    const reserved = await call('PUT', '/api/v1/devices/mqtt:s2/labels', 'technician', { labels: { ['__proto__']: 'x', zone: 'hot-2' } });
    expect(reserved.status).toBe(400);
    expect(JSON.stringify(reserved.body)).toContain('reserved name');
    expect(await configuration('mqtt:s2')).toMatchObject({ labels: { zone: 'hot-1' } });
    expect((await call('GET', '/api/v1/config-profiles', 'viewer')).status).toBe(200);
    expect(await call('POST', '/api/v1/config-profiles', 'viewer', vib(1))).toMatchObject({ status: 403, body: { code: 'FORBIDDEN' } });
    expect((await call('POST', '/api/v1/config-profiles', 'technician', vib(1))).status).toBe(403);
    expect((await call('POST', '/api/v1/config-profiles/vib/rollback', 'technician', { version: 2 })).status).toBe(403);
    expect((await call('PUT', '/api/v1/devices/mqtt:s2/labels', 'viewer', { labels: {} })).status).toBe(403);
    const entries = await audit();
    for (const e of [
      'config.profile.apply profile:vib',
      'config.profile.rollback profile:vib',
      'config.assign mqtt:s2',
      'config.unassign mqtt:s2',
      'device.labels mqtt:s2',
      'config.profile.apply profile:lab',
    ])
      expect(entries).toContain(e);
    expect(entries.filter((e) => e === 'config.profile.apply profile:vib')).toHaveLength(2);
  });

  it('the CLI lists, shows, applies (dry run first), diffs a file against the head, rolls back, assigns and labels', async () => {
    const file = join(tmp.dir, 'vib.yaml');
    writeFileSync(
      file,
      [
        'name: vib',
        'protocol: mqtt',
        'selector:',
        '  manufacturer: "acme*"',
        'schema:',
        '  threshold: { type: number, minimum: 0, maximum: 50 }',
        '  mode: { type: string, enum: [rms, peak] }',
        'values:',
        '  threshold: 7.5',
        '  mode: peak',
        '',
      ].join('\n'),
    );
    const list = await cli('config-profiles', 'list');
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.split('\n')[0]).toBe('PROFILE\tPROTOCOL\tHEAD\tLATEST\tDEVICES');
    expect(list.stdout).toMatch(/^vib\tmqtt\t1\t2\tpending 1$/m);
    const json = await cli('config-profiles', 'list', '--json');
    expect(JSON.parse(json.stdout)).toHaveLength(2);
    const diff = await cli('config-profiles', 'diff', file);
    expect(diff.code, diff.stderr).toBe(0);
    expect(diff.stdout).toContain('description');
    expect(diff.stdout).toContain('threshold: 4.5 -> 7.5');
    expect(diff.stdout).toContain('mqtt:s1: vib v1 -> vib v3');
    const dry = await cli('config-profiles', 'apply', file, '--dry-run');
    expect(dry.stdout).toMatch(/^vib: would store version 3 \(dry run, nothing stored\)$/m);
    const applied = await cli('config-profiles', 'apply', file);
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stdout).toMatch(/^vib: version 3 stored \(was 1\)$/m);
    expect((await cli('config-profiles', 'apply', file)).stdout).toMatch(/^vib: unchanged \(version 3 is the head\)$/m);
    const stored = await cli('config-profiles', 'diff', 'vib', '--from', '2', '--to', '3');
    expect(stored.stdout).toContain('mode: "rms" -> "peak"');
    const show = await cli('config-profiles', 'show', 'vib', '1');
    expect(show.stdout).toMatch(/^# vib version 1 \(head is 3\)/);
    expect(show.stdout).toContain('threshold: 4.5');
    expect((await cli('config-profiles', 'rollback', 'vib', '2')).stdout).toMatch(/^vib: head 3 -> 2$/m);
    expect((await cli('config-profiles', 'assign', 'mqtt:s2', 'vib')).stdout).toMatch(/^mqtt:s2: pinned to vib$/m);
    const shown = await cli('devices', 'show', 'mqtt:s2');
    expect(shown.stdout).toMatch(/^ {2}configuration: vib v2: pending \(pinned to vib\)$/m);
    expect((await cli('config-profiles', 'unassign', 'mqtt:s2')).stdout).toMatch(/unpinned/);
    const label = await cli('devices', 'label', 'mqtt:s2', 'floor=2', '--remove', 'zone');
    expect(label.stdout).toMatch(/^mqtt:s2: labels floor=2$/m);
    expect(label.stdout).toContain('mqtt:s2: lab v1 -> (none)');
    // A bad file: every problem with its path, exit 64, nothing sent.
    writeFileSync(file, 'name: vib\nprotocol: mqtt\nschema: { threshold: { type: number } }\nvalues: { threshold: "x", extra: 1 }\n');
    const bad = await cli('config-profiles', 'apply', file);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toContain('values.threshold: expected number, got string "x"');
    expect(bad.stderr).toContain('values.extra: extra is not declared in schema');
    expect((await call('GET', '/api/v1/config-profiles')).body.items).toMatchObject([{ name: 'lab' }, { name: 'vib', head: 2, latest: 3 }]);
  });
});
