import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { defaultReportConfig } from '../../agent/config/reportSchema.js';
import type { CertificateRecord } from '../../certs/store.js';
import type { Device } from '../../agent/inventory/device.js';
import { evaluate } from '../../agent/report/evaluator.js';
import { PatchPolicy } from '../../agent/report/patchPolicy.js';
import { inventoryBySlices } from '../../agent/inventory/slices.js';
import { ReportService } from '../../agent/report/reportService.js';
import type { SightingRecorder } from '../../agent/report/sightings.js';
import type { ReportRepository } from '../../agent/store/reportRepository.js';

const now = new Date('2026-06-01T00:00:00Z');
const day = 86_400_000;
const device = (over: Partial<Device> & Pick<Device, 'id' | 'name'>): Device => ({
  protocol: 'mqtt',
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

/** DeviceRepository.slice over an array in its order; `between` runs before each slice after the first (another process writing). */
const repository = (rows: Device[], between?: (sliceIndex: number) => void) => {
  let calls = 0;
  return {
    slice: (_filter: Record<string, never>, _order: undefined, limit: number, offset: number) => {
      if (calls > 0) between?.(calls);
      calls++;
      return rows.slice(offset, offset + limit);
    },
    calls: () => calls,
  };
};

describe('the report reads the inventory by slices', () => {
  const many = Array.from({ length: 10 }, (_, i) => device({ id: `mqtt:d-${i}`, name: `d-${i}` }));

  it('yields every device once, a slice at a time, and stops at the first short slice', () => {
    const repo = repository(many);
    expect([...inventoryBySlices(repo, 3)].map((d) => d.id)).toEqual(many.map((d) => d.id));
    expect(repo.calls()).toBe(4);
    const exact = repository(many.slice(0, 9));
    expect([...inventoryBySlices(exact, 3)]).toHaveLength(9);
    expect(exact.calls()).toBe(4); // the empty fourth slice says the end
  });

  it('skips a device an insert by another process pushed into the next slice', () => {
    const rows = [...many];
    // Before the second slice, a device sorting first is inserted: d-2 moves from the first slice into the second.
    const repo = repository(rows, (i) => (i === 1 ? rows.unshift(device({ id: 'mqtt:a-new', name: 'a-new' })) : undefined));
    const ids = [...inventoryBySlices(repo, 3)].map((d) => d.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.filter((id) => id.startsWith('mqtt:d-'))).toEqual(many.map((d) => d.id));
  });

  it('finds the same from a one-pass reading of the inventory as from a list', () => {
    const cert = (serial: string, identity: string, profile: CertificateRecord['profile']) =>
      ({ serial, identity, profile, notAfter: new Date(now.getTime() + 3 * day), issuedAt: new Date(now.getTime() - 300 * day) }) as CertificateRecord;
    const devices = [
      ...many,
      device({ id: 'mqtt:old', name: 'old', lastSeen: new Date(now.getTime() - 30 * day), certificateSerial: 'A1' }),
      device({ id: 'mqtt:back', name: 'back', updatedAt: now }),
      device({ id: 'mqtt:gone', name: 'gone', state: 'decommissioned' }),
      device({ id: 'mqtt:low', name: 'low', nameplate: { manufacturer: 'ACME', firmwareVersion: '1.0' } }),
      device({
        id: 'opcua:urn:s',
        protocol: 'opcua',
        name: 'urn:s',
        state: 'discovered',
        source: { opcua: { applicationUri: 'urn:s', endpointUrl: 'opc.tcp://127.0.0.2:4840' } },
      }),
    ];
    const sighting = (kind: 'revoked_connecting' | 'shadow.identity_conflict', subject: string) => ({
      kind,
      protocol: 'mqtt' as const,
      subject,
      evidence: { via: 'mutual-tls' },
      firstSeen: new Date(now.getTime() - 2 * day),
      lastSeen: new Date(now.getTime() - 2 * day),
      count: 2,
    });
    const input = {
      now,
      sightings: [sighting('revoked_connecting', 'mqtt:back'), sighting('shadow.identity_conflict', 'mqtt:d-4')],
      // By serial (old), by MQTT identity (gone: decommissioned, left out), by OPC UA applicationUri, and one nobody holds.
      expiring: [cert('A1', 'old', 'mqtt-device'), cert('B2', 'gone', 'mqtt-device'), cert('C3', 'urn:s', 'opcua-application'), cert('D4', 'x', 'mqtt-device')],
      policy: new PatchPolicy([{ manufacturer: 'ACME', minVersion: '2.0' }]),
      staleDays: 7,
      expiringDays: 14,
    };
    const fromList = evaluate({ ...input, devices });
    const fromSlices = evaluate({ ...input, devices: inventoryBySlices(repository(devices), 4) });
    expect(fromSlices).toEqual(fromList);
    expect(fromList.map((f) => `${f.kind} ${f.subject} ${f.deviceId}`)).toEqual([
      'shadow.identity_conflict mqtt:d-4 mqtt:d-4',
      'stale mqtt:old mqtt:old',
      'unpatched mqtt:low mqtt:low',
      'shadow.unprovisioned_server opcua:urn:s opcua:urn:s',
      'expiring certificate:A1 mqtt:old',
      'expiring certificate:C3 opcua:urn:s',
      'expiring certificate:D4 null',
    ]);
  });
});

describe('the first evaluation of the report', () => {
  it('waits for the agent to be up (started), off the way to READY, and then reads the inventory once', async () => {
    const inventory = repository([device({ id: 'mqtt:a', name: 'a' })]);
    const reports = {
      countOpenByKind: () => ({}),
      sightingsSince: () => [],
      openKeys: () => new Set<string>(),
      reconcile: () => ({ opened: [], resolved: [] }),
      pruneSightings: () => 0,
      pruneResolved: () => 0,
    } as unknown as ReportRepository;
    const sightings = { setWindow: () => {}, start: () => {}, stop: () => {}, flush: () => {} } as unknown as SightingRecorder;
    const service = new ReportService({
      log: pino({ level: 'silent' }),
      config: defaultReportConfig(),
      reports,
      devices: inventory,
      certificates: { list: () => [] },
      sightings,
      registry: new Registry(),
    });
    const turns = async () => {
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    };
    await service.start();
    await turns();
    expect(inventory.calls()).toBe(0);
    service.started();
    await turns();
    expect(inventory.calls()).toBe(1);
    await service.stop();
  });
});
