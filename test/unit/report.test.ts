import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../agent/config/load.js';
import { ConfigError } from '../../agent/errors.js';
import type { Device } from '../../agent/inventory/device.js';
import { compareVersions, parseVersion } from '../../agent/inventory/softwareVersion.js';
import { capPerKind, evaluate, OVERFLOW_SUBJECT } from '../../agent/report/evaluator.js';
import { PatchPolicy } from '../../agent/report/patchPolicy.js';
import { tempDir } from '../helpers/daemon.js';

describe('software version comparison', () => {
  // [a, b, expected sign of compare(a, b)]
  const table: [string, string, -1 | 0 | 1][] = [
    ['1.2.10', '1.2.9', 1],
    ['1.2.9', '1.2.10', -1],
    ['1.2', '1.2.0', 0],
    ['1.2.0.0', '1.2', 0],
    ['v1.4.2', '1.4.2', 0],
    ['V2.0', '1.99.99', 1],
    ['01.02.003', '1.2.3', 0],
    ['1.0.0-alpha', '1.0.0', -1],
    ['1.0.0-alpha', '1.0.0-alpha.1', -1],
    ['1.0.0-alpha.1', '1.0.0-alpha.beta', -1],
    ['1.0.0-alpha.beta', '1.0.0-beta', -1],
    ['1.0.0-beta', '1.0.0-beta.2', -1],
    ['1.0.0-beta.2', '1.0.0-beta.11', -1],
    ['1.0.0-beta.11', '1.0.0-rc.1', -1],
    ['1.0.0-rc.1', '1.0.0', -1],
    ['1.0.0+build.5', '1.0.0+build.7', 0],
    ['2.0.0-rc.1+exp', '2.0.0-rc.1', 0],
    ['10.0', '9.99', 1],
    ['1.2.3.4567', '1.2.3.4566', 1],
    ['123456789012345678901234567890', '123456789012345678901234567891', -1],
  ];
  for (const [a, b, expected] of table) {
    it(`${a} ${expected < 0 ? '<' : expected > 0 ? '>' : '='} ${b}`, () => {
      expect(compareVersions(parseVersion(a)!, parseVersion(b)!)).toBe(expected);
      expect(compareVersions(parseVersion(b)!, parseVersion(a)!)).toBe(-expected || 0);
    });
  }
  for (const text of ['', 'unknown', 'V1.04 build 7', '2.1b', '1.2.x', '1..2', '.1', '1.2.', 'v', '1.0.0-', '1.0.0+', '1.0.0-beta..1', 'x'.repeat(200)]) {
    it(`"${text.slice(0, 20)}" is unparseable`, () => expect(parseVersion(text)).toBeUndefined());
  }
});

describe('patch policy', () => {
  const policy = new PatchPolicy([
    { manufacturer: 'Fixture *', model: 'Fixture PLC', minVersion: '1.2.0', reason: 'CVE-2026-0001' },
    { manufacturer: 'acme', badVersions: ['2.3.1', 'v2.4'] },
    { model: 'Pump-?', minVersion: '3.0.0-rc.2' },
  ]);
  const cases: { name: string; nameplate: Device['nameplate']; status: string; what?: string[] }[] = [
    {
      name: 'a version below minVersion is unpatched',
      nameplate: { manufacturer: 'Fixture Automation', model: 'Fixture PLC', firmwareVersion: '1.0.0' },
      status: 'unpatched',
      what: ['below minVersion 1.2.0'],
    },
    {
      name: 'minVersion itself is compliant',
      nameplate: { manufacturer: 'fixture automation', model: 'fixture plc', firmwareVersion: 'v1.2' },
      status: 'compliant',
    },
    {
      name: 'a known-bad version is unpatched, compared as versions',
      nameplate: { manufacturer: 'ACME', firmwareVersion: '2.4.0' },
      status: 'unpatched',
      what: ['known bad version v2.4'],
    },
    { name: 'another version of a bad-list rule is compliant', nameplate: { manufacturer: 'ACME', firmwareVersion: '2.3.2' }, status: 'compliant' },
    { name: 'a pre-release below a pre-release minimum is unpatched', nameplate: { model: 'Pump-7', firmwareVersion: '3.0.0-rc.1' }, status: 'unpatched' },
    { name: 'a release above a pre-release minimum is compliant', nameplate: { model: 'Pump-7', firmwareVersion: '3.0.0' }, status: 'compliant' },
    { name: 'a nameplate without a version is unknown, not compliant', nameplate: { manufacturer: 'ACME' }, status: 'unknown' },
    { name: 'an unparseable version is unknown, not compliant', nameplate: { manufacturer: 'ACME', firmwareVersion: 'V1.04 build 7' }, status: 'unknown' },
    { name: 'a device no rule covers is unmatched', nameplate: { manufacturer: 'Other', model: 'Pump-77', firmwareVersion: '0.1' }, status: 'unmatched' },
    { name: 'a pattern matches the whole model (? is one character)', nameplate: { model: 'Pump-77', firmwareVersion: '1.0' }, status: 'unmatched' },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const v = policy.judge(c.nameplate);
      expect(v.status).toBe(c.status);
      if (c.what && v.status === 'unpatched') expect(v.violations.map((x) => x.what)).toEqual(c.what);
    });
  }
});

describe('report.patchPolicy in the configuration', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => (tmp = tempDir()));
  afterEach(() => tmp.cleanup());
  const problems = (yaml: string) => {
    const file = join(tmp.dir, 'c.yaml');
    writeFileSync(file, yaml);
    try {
      loadConfig({ file, env: {}, cwd: tmp.dir });
    } catch (err) {
      if (err instanceof ConfigError) return err.problems.map((p) => ({ path: p.path, message: p.message }));
      throw err;
    }
    return [];
  };

  it('takes rules with parseable versions', () => {
    expect(problems("report:\n  patchPolicy:\n    - { manufacturer: 'Fixture *', minVersion: v1.2.10, badVersions: ['1.1.3', 2.0.0-rc.1] }\n")).toEqual([]);
  });

  it('refuses an unparseable minVersion and bad version, each with its path, all at once', () => {
    const found = problems(
      [
        'report:',
        '  patchPolicy:',
        '    - { model: X, minVersion: 1.2.3 }',
        "    - { model: Y, minVersion: 'V1.04 build 7', badVersions: ['1.0', '2.1b'] }",
        '',
      ].join('\n'),
    );
    expect(found).toEqual([
      { path: 'report.patchPolicy.1.minVersion', message: expect.stringMatching(/"V1\.04 build 7" is not a version the report can compare/) },
      { path: 'report.patchPolicy.1.badVersions.1', message: expect.stringMatching(/"2\.1b" is not a version/) },
    ]);
  });

  it('refuses a rule that says nothing about versions, and unknown keys', () => {
    const found = problems("report:\n  patchPolicy:\n    - { model: X }\n    - { model: Y, minVersion: '1', maxVersion: '2' }\n");
    expect(found.map((p) => p.path)).toEqual(['report.patchPolicy.0', 'report.patchPolicy.1.maxVersion']);
    expect(found[0]!.message).toMatch(/needs minVersion or badVersions/);
    expect(found[1]!.message).toMatch(/unknown|not allowed|unrecognized/i);
  });
});

describe('the evaluation', () => {
  const now = new Date('2026-06-01T00:00:00Z');
  const day = 86_400_000;
  const device = (over: Partial<Device>): Device => ({
    id: 'mqtt:pump-1',
    protocol: 'mqtt',
    name: 'pump-1',
    state: 'provisioned',
    blocked: false,
    preapproved: false,
    nameplate: {},
    source: {},
    online: false,
    firstSeen: new Date(now.getTime() - 30 * day),
    lastSeen: new Date(now.getTime() - day),
    revision: 1,
    updatedAt: new Date(now.getTime() - day),
    ...over,
  });
  const run = (devices: Device[], extra: Partial<Parameters<typeof evaluate>[0]> = {}) =>
    evaluate({
      now,
      devices,
      sightings: [],
      expiring: [],
      policy: new PatchPolicy([{ manufacturer: 'ACME', minVersion: '2.0' }]),
      staleDays: 7,
      expiringDays: 14,
      ...extra,
    });

  it('finds unprovisioned OPC UA servers under their applicationUri, not provisioned ones', () => {
    const server = (state: Device['state'], uri: string) =>
      device({ id: `opcua:${uri}`, protocol: 'opcua', name: uri, state, source: { opcua: { applicationUri: uri, endpointUrl: 'opc.tcp://127.0.0.2:4840' } } });
    const found = run([
      server('discovered', 'urn:a'),
      server('pending', 'urn:b'),
      server('rejected', 'urn:c'),
      server('provisioned', 'urn:d'),
      server('decommissioned', 'urn:e'),
    ]);
    expect(found.filter((f) => f.kind === 'shadow.unprovisioned_server').map((f) => f.subject)).toEqual(['opcua:urn:a', 'opcua:urn:b', 'opcua:urn:c']);
  });

  it('finds stale, unpatched and unknown provisioned devices, and leaves others alone', () => {
    const found = run([
      device({ id: 'mqtt:old', name: 'old', lastSeen: new Date(now.getTime() - 8 * day) }),
      device({ id: 'mqtt:low', name: 'low', nameplate: { manufacturer: 'ACME', firmwareVersion: '1.9.9' } }),
      device({ id: 'mqtt:odd', name: 'odd', nameplate: { manufacturer: 'ACME', firmwareVersion: 'beta' } }),
      device({ id: 'mqtt:ok', name: 'ok', nameplate: { manufacturer: 'ACME', firmwareVersion: '2.0.1' } }),
      device({ id: 'mqtt:wait', name: 'wait', state: 'pending', nameplate: { manufacturer: 'ACME', firmwareVersion: '1.0' }, lastSeen: new Date(0) }),
      device({
        id: 'opcua:s',
        protocol: 'opcua',
        name: 's',
        state: 'discovered',
        nameplate: { manufacturer: 'ACME', firmwareVersion: '1.0' },
        source: { opcua: { applicationUri: 'urn:s' } },
      }),
      device({
        id: 'opcua:r',
        protocol: 'opcua',
        name: 'r',
        state: 'rejected',
        nameplate: { manufacturer: 'ACME', firmwareVersion: '1.0' },
        source: { opcua: { applicationUri: 'urn:r' } },
      }),
    ]);
    // A pending MQTT device's nameplate is an unauthenticated claim: not judged; a discovered OPC UA server's was read from it.
    expect(
      found
        .filter((f) => !f.kind.startsWith('shadow.'))
        .map((f) => `${f.kind} ${f.subject}`)
        .sort(),
    ).toEqual(['patch_unknown mqtt:odd', 'stale mqtt:old', 'unpatched mqtt:low', 'unpatched opcua:urn:s']);
  });

  it('drops an unenrolled-client sighting the inventory explains, and a revoked one provisioned again since', () => {
    const sighting = (kind: 'shadow.unenrolled_client' | 'revoked_connecting', subject: string) => ({
      kind,
      protocol: 'mqtt' as const,
      subject,
      evidence: { via: 'mutual-tls' },
      firstSeen: new Date(now.getTime() - 2 * day),
      lastSeen: new Date(now.getTime() - 2 * day),
      count: 3,
    });
    const found = run([device({ id: 'mqtt:pump-1', name: 'pump-1', state: 'pending' }), device({ id: 'mqtt:back', name: 'back' })], {
      sightings: [
        sighting('shadow.unenrolled_client', 'mqtt:pump-1'),
        sighting('shadow.unenrolled_client', 'mqtt:stranger'),
        sighting('revoked_connecting', 'mqtt:back'),
      ],
    });
    expect(found.map((f) => `${f.kind} ${f.subject} ${String(f.evidence.count)}`)).toEqual(['shadow.unenrolled_client mqtt:stranger 3']);
  });

  it('reports the client ids folded into mqtt:@<address> as one finding that says how many', () => {
    const found = run([], {
      sightings: [
        {
          kind: 'shadow.unenrolled_client',
          protocol: 'mqtt',
          subject: 'mqtt:@10.0.0.66',
          evidence: { clientId: 'flood-99', remoteAddress: '10.0.0.66', folded: 80 },
          firstSeen: new Date(now.getTime() - day),
          lastSeen: now,
          count: 81,
        },
      ],
    });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ subject: 'mqtt:@10.0.0.66', deviceId: null, evidence: { folded: 80, count: 81 } });
    expect(found[0]!.summary).toContain('80 sightings folded');
  });

  it('caps the findings of a kind, keeping the open ones first, and says how many more there are', () => {
    const facts = (subject: string, minutes: number) => ({
      kind: 'stale' as const,
      subject,
      deviceId: subject,
      summary: subject,
      evidence: {},
      firstSeen: new Date(now.getTime() + minutes * 60_000),
      lastSeen: new Date(now.getTime() + minutes * 60_000),
    });
    const found = [facts('mqtt:a', 1), facts('mqtt:b', 2), facts('mqtt:c', 3), facts('mqtt:d', 4), { ...facts('opcua:x', 0), kind: 'unpatched' as const }];
    const capped = capPerKind(found, new Set(['stale\u0000mqtt:d']), 2);
    expect(capped.map((f) => `${f.kind} ${f.subject}`)).toEqual(['stale mqtt:d', 'stale mqtt:a', `stale ${OVERFLOW_SUBJECT}`, 'unpatched opcua:x']);
    expect(capped[2]).toMatchObject({ deviceId: null, evidence: { more: 2, limit: 2 }, firstSeen: found[1]!.firstSeen, lastSeen: found[2]!.lastSeen });
    // Under the limit, nothing changes.
    expect(capPerKind(found, new Set(), 4)).toEqual(found);
  });
});
