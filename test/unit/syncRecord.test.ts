import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import type { Device } from '../../agent/inventory/device.js';
import { upstreamItem } from '../../agent/sync/record.js';
import { REPO } from '../helpers/daemon.js';

const base: Device = {
  id: 'opcua:urn.plant1.press-7-1a2b3c4d',
  protocol: 'opcua',
  name: 'urn.plant1.press-7-1a2b3c4d',
  state: 'provisioned',
  blocked: false,
  preapproved: false,
  nameplate: {
    manufacturer: 'ACME Pumps',
    model: 'CP-300',
    serialNumber: 'SN-0042',
    hardwareRevision: 'HW-B',
    firmwareVersion: '4.1.2',
    displayName: 'Press 7',
  },
  source: {
    opcua: {
      endpointUrl: 'opc.tcp://10.20.0.31:4840',
      applicationUri: 'urn:plant1:press-7',
      productUri: 'urn:acme:s9',
      buildInfo: { softwareVersion: '9.4.1' },
      deviceSet: [{ productInstanceUri: 'urn:acme:pumps:cp-300:sn-0042', assetId: 'PLANT1-P-007' }],
    },
  },
  certificateSerial: 'abc123',
  online: true,
  firstSeen: new Date('2026-11-01T00:00:00Z'),
  lastSeen: new Date('2026-11-26T00:00:00Z'),
  revision: 12,
  updatedAt: new Date('2026-11-25T10:00:00Z'),
};

describe('the upstream record', () => {
  it("sends the asset tag and the location fields a technician set, over the server's AssetId and the gateway's location", () => {
    const annotated = { ...base, assetTag: 'PLANT1-P-007-B', location: { line: 'L5', cell: 'C2' } };
    const item = upstreamItem(annotated, undefined, { site: 'plant-1', line: 'L2' });
    expect(item.record.assetTag).toBe('PLANT1-P-007-B');
    expect(item.record.location).toEqual({ site: 'plant-1', line: 'L5', cell: 'C2' });
    expect(upstreamItem(base, undefined, { site: 'plant-1' }).record).toMatchObject({ assetTag: 'PLANT1-P-007', location: { site: 'plant-1' } });
  });

  it('maps an OPC UA server with a DI nameplate as docs/upstream-api.md says', () => {
    const cert = { serial: 'abc123', status: 'valid', thumbprint: 'ff'.repeat(32), notAfter: new Date('2028-11-26T00:00:00Z') };
    const item = upstreamItem(base, cert as never, { site: 'plant-1', line: 'L2' });
    expect(item).toMatchObject({ deviceId: base.id, revision: 12, op: 'upsert', observedAt: '2026-11-25T10:00:00.000Z' });
    expect(item.record).toEqual({
      deviceId: base.id,
      assetTag: 'PLANT1-P-007',
      manufacturer: { name: 'ACME Pumps', uri: null },
      model: 'CP-300',
      productCode: 'urn:acme:s9',
      serialNumber: 'SN-0042',
      productInstanceUri: 'urn:acme:pumps:cp-300:sn-0042',
      hardwareRevision: 'HW-B',
      firmwareVersion: '4.1.2',
      softwareVersion: '9.4.1',
      deviceClass: 'opcua-server',
      displayName: 'Press 7',
      location: { site: 'plant-1', line: 'L2' },
      source: { protocol: 'opcua', endpoint: 'opc.tcp://10.20.0.31:4840', applicationUri: 'urn:plant1:press-7', topics: [] },
      certificate: { status: 'valid', serial: 'abc123', thumbprint: 'ff'.repeat(32), notAfter: '2028-11-26T00:00:00.000Z' },
      configuration: null,
      lifecycleState: 'provisioned',
      firstSeen: '2026-11-01T00:00:00.000Z',
      lastSeen: '2026-11-26T00:00:00.000Z',
      online: true,
    });
  });

  it('retires a decommissioned device, with null for what is unknown and the MQTT topics it was seen on', () => {
    // The sources as discovery records them (agent/discovery/announcements.ts).
    const source = {
      sparkplug: { protocol: 'sparkplug', message: 'NBIRTH', group: 'plant', edgeNode: 'meter-9', bdSeq: 0, metrics: 3 },
      homie: { protocol: 'homie', topic: 'homie/meter-9/$state', state: 'ready' },
      homeassistant: { protocol: 'homeassistant', component: 'sensor', nodeId: 'meter-9', objectId: 'power', identifier: 'x/y' },
    };
    const mqtt: Device = {
      ...base,
      id: 'mqtt:meter-9',
      protocol: 'mqtt',
      name: 'meter-9',
      state: 'decommissioned',
      nameplate: {},
      certificateSerial: undefined,
      source,
    } as Device;
    const item = upstreamItem(mqtt, undefined, {});
    expect(item.op).toBe('retire');
    expect(item.record).toMatchObject({ manufacturer: { name: null, uri: null }, model: null, certificate: null, deviceClass: 'mqtt-device' });
    expect(item.record.source).toEqual({
      protocol: 'mqtt',
      endpoint: null,
      applicationUri: null,
      topics: ['homeassistant/sensor/meter-9/power/config', 'homie/meter-9/$state', 'spBv1.0/plant/NBIRTH/meter-9'],
    });
  });

  it('gives a device enrolled over MQTT, as the enrollment stores it, its request topic (not the characters of it)', () => {
    const enrolled: Device = {
      ...base,
      id: 'mqtt:meter-7',
      protocol: 'mqtt',
      name: 'meter-7',
      nameplate: { manufacturer: 'Acme Sensors', model: 'TS-100', serialNumber: 'SN-meter-7' },
      // What agent/onboarding/mqttEnrollment.ts writes: { protocol, provisioning: `${topicPrefix}/${name}` }.
      source: { protocol: 'mqtt', provisioning: 'edge/prov/v1/meter-7' },
    };
    expect(upstreamItem(enrolled, undefined, {}).record.source).toEqual({
      protocol: 'mqtt',
      endpoint: null,
      applicationUri: null,
      topics: ['edge/prov/v1/meter-7/request'],
    });
  });

  it("carries the device's configuration (profile, version, status), and null for a device without one", () => {
    expect(upstreamItem(base, undefined, {}).record.configuration).toBeNull();
    const configured = upstreamItem(base, undefined, {}, { profile: 'vib', version: 2, status: 'drifted' });
    expect(configured.record.configuration).toEqual({ profile: 'vib', version: 2, status: 'drifted' });
    // Its own object: the summary the repository read is not shared with the record sent.
    expect(Object.keys(configured.record.configuration!)).toEqual(['profile', 'version', 'status']);
  });

  it('has exactly the fields the OpenAPI file requires', () => {
    const api = parse(readFileSync(join(REPO, 'docs/upstream-api.openapi.yaml'), 'utf8')) as {
      components: { schemas: { Record: { required: string[]; properties: Record<string, unknown> }; Item: { required: string[] } } };
    };
    const item = upstreamItem(base, undefined, {});
    expect(Object.keys(item.record).sort()).toEqual([...api.components.schemas.Record.required].sort());
    expect(Object.keys(api.components.schemas.Record.properties).sort()).toEqual(Object.keys(item.record).sort());
    expect(Object.keys(item).sort()).toEqual([...api.components.schemas.Item.required].sort());
  });

  it('gives the configuration the statuses the OpenAPI file names, and the statuses device_config allows', () => {
    const api = parse(readFileSync(join(REPO, 'docs/upstream-api.openapi.yaml'), 'utf8')) as {
      components: { schemas: { Configuration: { required: string[]; properties: { status: { enum: string[] } } } } };
    };
    const schema = api.components.schemas.Configuration;
    expect(schema.required.sort()).toEqual(['profile', 'status', 'version']);
    // Migration 0013's CHECK, less 'none' (sent as null).
    const migration = readFileSync(join(REPO, 'agent/store/migrations/0013_deviceConfiguration.ts'), 'utf8');
    const allowed = /status TEXT NOT NULL DEFAULT 'none' CHECK \(status IN \(([^)]*)\)\)/
      .exec(migration)![1]!
      .split(',')
      .map((s) => s.trim().slice(1, -1));
    expect(schema.properties.status.enum.sort()).toEqual(allowed.filter((s) => s !== 'none').sort());
  });
});
