import sparkplugPayload from 'sparkplug-payload';
import { describe, expect, it } from 'vitest';
import { ANNOUNCEMENT_FILTERS, AnnouncementError, parseAnnouncement, type AnnouncementErrorCode } from '../../agent/discovery/announcements.js';

const codec = sparkplugPayload.get('spBv1.0')!;
type Payload = Parameters<typeof codec.encodePayload>[0];
type Metric = NonNullable<Payload['metrics']>[number];

const sparkplug = (metrics: Metric[], seq = 0): Buffer => Buffer.from(codec.encodePayload({ timestamp: Date.now(), metrics, seq }));
const text = (name: string, value: string): Metric => ({ name, type: 'String', value });
const bdSeq = (value: number | string): Metric => ({ name: 'bdSeq', type: 'UInt64', value: Number(value) });
const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

function failure(topic: string, payload: Buffer, max?: number): AnnouncementError {
  try {
    parseAnnouncement(topic, payload, max);
  } catch (err) {
    if (err instanceof AnnouncementError) return err;
    throw err;
  }
  throw new Error(`expected an AnnouncementError for ${topic}`);
}

describe('ANNOUNCEMENT_FILTERS', () => {
  it('lists the Sparkplug, Homie and Home Assistant discovery filters', () => {
    expect(ANNOUNCEMENT_FILTERS).toEqual([
      'spBv1.0/+/NBIRTH/+',
      'spBv1.0/+/NDEATH/+',
      'spBv1.0/+/DBIRTH/+/+',
      'spBv1.0/+/DDEATH/+/+',
      'homie/+/$state',
      'homie/+/$name',
      'homeassistant/+/+/config',
      'homeassistant/+/+/+/config',
    ]);
  });
});

describe('parseAnnouncement: topics it does not handle', () => {
  it.each([
    'spBv1.0/plant/NDATA/gw1',
    'spBv1.0/plant/NBIRTH/gw1/extra',
    'spBv1.0/plant/DBIRTH/gw1',
    'spBv1.0/STATE/scada',
    'spAv1.0/plant/NBIRTH/gw1',
    'homie/dev1/$nodes',
    'homie/5/dev1/$state',
    'homie/dev1/node/$name',
    'homeassistant/sensor/x/state',
    'homeassistant/sensor/config',
    'homeassistant/a/b/c/d/config',
    'devices/x/config',
    '',
  ])('returns undefined for %j, whatever the payload size', (topic) => {
    expect(parseAnnouncement(topic, Buffer.alloc(70_000))).toBeUndefined();
  });
});

describe('parseAnnouncement: Sparkplug B', () => {
  it('reads an NBIRTH: name, bdSeq, metric count and the nameplate from Properties/*', () => {
    const payload = sparkplug([
      bdSeq(7),
      { name: 'Node Control/Rebirth', type: 'Boolean', value: false },
      text('Properties/Hardware Make', 'Acme'),
      text('Properties/Hardware Model', 'GW-100'),
      text('Properties/Serial Number', 'SN-0042'),
      text('Properties/Hardware Revision', 'B'),
      text('Properties/OS', 'Linux'),
      text('Properties/OS Version', '6.1'),
      text('Properties/FW', '2.4.1'),
    ]);
    expect(parseAnnouncement('spBv1.0/plant/NBIRTH/gw1', payload)).toEqual({
      source: 'sparkplug',
      name: 'gw1',
      online: true,
      nameplate: { manufacturer: 'Acme', model: 'GW-100', serialNumber: 'SN-0042', hardwareRevision: 'B', firmwareVersion: '2.4.1' },
      details: { protocol: 'sparkplug', message: 'NBIRTH', group: 'plant', edgeNode: 'gw1', bdSeq: 7, metrics: 9 },
    });
  });

  it('matches property names ignoring case and takes the alternative spellings', () => {
    const payload = sparkplug([
      text('properties/MANUFACTURER', 'Acme'),
      text('Properties/model', 'M1'),
      text('PROPERTIES/SERIALNUMBER', 'S1'),
      text('Properties/Firmware Version', '1.0'),
    ]);
    expect(parseAnnouncement('spBv1.0/plant/NBIRTH/gw1', payload)?.nameplate).toEqual({
      manufacturer: 'Acme',
      model: 'M1',
      serialNumber: 'S1',
      firmwareVersion: '1.0',
    });
  });

  it('prefers a firmware metric over the OS version whatever the order, and uses the OS version alone', () => {
    const both = sparkplug([text('Properties/OS Version', '6.1'), text('Properties/FW', '2.0')]);
    const osOnly = sparkplug([text('Properties/OS Version', '6.1')]);
    expect(parseAnnouncement('spBv1.0/g/NBIRTH/n', both)?.nameplate.firmwareVersion).toBe('2.0');
    expect(parseAnnouncement('spBv1.0/g/NBIRTH/n', osOnly)?.nameplate.firmwareVersion).toBe('6.1');
  });

  it('ignores non-string property values and cleans text (controls, bidi overrides, length)', () => {
    const payload = sparkplug([
      { name: 'Properties/Serial Number', type: 'Int32', value: 42 },
      text('Properties/Hardware Make', '  Ac\u0000me\u202e  Corp\n'),
      text('Properties/Hardware Model', 'x'.repeat(500)),
    ]);
    const nameplate = parseAnnouncement('spBv1.0/g/NBIRTH/n', payload)?.nameplate;
    expect(nameplate).toEqual({ manufacturer: 'Ac me Corp', model: 'x'.repeat(128) });
  });

  it('omits a bdSeq that does not fit a JS number', () => {
    const payload = Buffer.from(codec.encodePayload({ metrics: [{ name: 'bdSeq', type: 'UInt64', value: 2 ** 60 }] }));
    expect(parseAnnouncement('spBv1.0/g/NBIRTH/n', payload)?.details).not.toHaveProperty('bdSeq');
  });

  it('reads a DBIRTH as `${edgeNode}.${device}`', () => {
    const payload = sparkplug([text('Properties/Hardware Make', 'Pumps Inc'), { name: 'Flow', type: 'Float', value: 1.5 }]);
    expect(parseAnnouncement('spBv1.0/plant/DBIRTH/gw1/pump-7', payload)).toEqual({
      source: 'sparkplug',
      name: 'gw1.pump-7',
      online: true,
      nameplate: { manufacturer: 'Pumps Inc' },
      details: { protocol: 'sparkplug', message: 'DBIRTH', group: 'plant', edgeNode: 'gw1', device: 'pump-7', metrics: 2 },
    });
  });

  it('reads an NDEATH as offline with its bdSeq and no nameplate', () => {
    const payload = sparkplug([bdSeq(7), text('Properties/Hardware Make', 'Acme')]);
    expect(parseAnnouncement('spBv1.0/plant/NDEATH/gw1', payload)).toEqual({
      source: 'sparkplug',
      name: 'gw1',
      online: false,
      nameplate: {},
      details: { protocol: 'sparkplug', message: 'NDEATH', group: 'plant', edgeNode: 'gw1', bdSeq: 7 },
    });
  });

  it.each([
    ['an encoded DDEATH', sparkplug([], 12)],
    ['an empty DDEATH', Buffer.alloc(0)],
  ])('reads %s as the device going offline', (_name, payload) => {
    expect(parseAnnouncement('spBv1.0/plant/DDEATH/gw1/pump-7', payload)).toEqual({
      source: 'sparkplug',
      name: 'gw1.pump-7',
      online: false,
      nameplate: {},
      details: { protocol: 'sparkplug', message: 'DDEATH', group: 'plant', edgeNode: 'gw1', device: 'pump-7' },
    });
  });

  it.each([
    ['JSON text', Buffer.from('{"metrics":[]}')],
    ['a truncated metric', Buffer.from([0x12, 0x05, 0x01])],
    ['an invalid wire type', Buffer.from('hello world')],
    ['an NBIRTH cut one byte short', ((b: Buffer) => b.subarray(0, b.length - 1))(sparkplug([bdSeq(1), text('Properties/FW', '1.0')]))],
  ])('refuses %s as MALFORMED', (_name, payload) => {
    const err = failure('spBv1.0/plant/NBIRTH/gw1', payload);
    expect(err.code).toBe('MALFORMED');
    expect(err.message).toMatch(/NBIRTH payload is not a Sparkplug B protobuf message/);
  });

  it.each([
    ['an edge node id with a space', 'spBv1.0/plant/NBIRTH/gw 1', /edge node id "gw 1"/],
    ['an empty edge node id', 'spBv1.0/plant/NBIRTH/', /edge node id ""/],
    ['a dotted edge node id', 'spBv1.0/plant/NBIRTH/gw.1', /no dot/],
    ['a dotted device id', 'spBv1.0/plant/DBIRTH/gw1/pump.7', /device id "pump.7"/],
    ['a device id with a non-ASCII letter', 'spBv1.0/plant/DDEATH/gw1/pümp', /device id/],
    ['an empty group id', 'spBv1.0//NDEATH/gw1', /group id ""/],
    ['a group id with a control character', 'spBv1.0/pl\u0007ant/NBIRTH/gw1', /group id "pl\\u0007ant"/],
    ['node and device ids longer than 64 together', `spBv1.0/plant/DBIRTH/${'n'.repeat(40)}/${'d'.repeat(30)}`, /inventory name/],
  ])('refuses %s with BAD_ID', (_name, topic, message) => {
    const err = failure(topic, sparkplug([]));
    expect(err.code).toBe('BAD_ID');
    expect(err.message).toMatch(message);
  });
});

describe('parseAnnouncement: Homie', () => {
  it.each([
    ['init', true],
    ['ready', true],
    ['sleeping', true],
    ['alert', true],
    ['disconnected', false],
    ['lost', false],
  ])('maps $state %s to online %s', (state, online) => {
    expect(parseAnnouncement('homie/boiler-1/$state', Buffer.from(state))).toEqual({
      source: 'homie',
      name: 'boiler-1',
      online,
      nameplate: {},
      details: { protocol: 'homie', topic: 'homie/boiler-1/$state', state },
    });
  });

  it('reads an emptied (removed) $state as offline', () => {
    expect(parseAnnouncement('homie/boiler-1/$state', Buffer.alloc(0))).toMatchObject({ name: 'boiler-1', online: false });
  });

  it.each([
    ['an unknown state', Buffer.from('running')],
    ['a state in the wrong case', Buffer.from('READY')],
    ['invalid UTF-8', Buffer.from([0x72, 0xff, 0x65])],
  ])('refuses $state with %s as MALFORMED', (_name, payload) => {
    expect(failure('homie/boiler-1/$state', payload).code).toBe('MALFORMED');
  });

  it('reads $name as the display name and says nothing about presence', () => {
    const announcement = parseAnnouncement('homie/boiler-1/$name', Buffer.from(' Boiler\tRoom 1 '));
    expect(announcement).toEqual({
      source: 'homie',
      name: 'boiler-1',
      nameplate: { displayName: 'Boiler Room 1' },
      details: { protocol: 'homie', topic: 'homie/boiler-1/$name' },
    });
    expect(announcement).not.toHaveProperty('online');
  });

  it.each([
    ['a space', 'homie/boiler 1/$state'],
    ['nothing', 'homie//$name'],
    ['65 characters', `homie/${'b'.repeat(65)}/$state`],
  ])('refuses a device id with %s with BAD_ID', (_name, topic) => {
    expect(failure(topic, Buffer.from('ready')).code).toBe('BAD_ID');
  });

  it('refuses an oversize $name with TOO_LARGE', () => {
    expect(failure('homie/boiler-1/$name', Buffer.alloc(65), 64).code).toBe('TOO_LARGE');
  });
});

describe('parseAnnouncement: Home Assistant discovery', () => {
  const full = {
    name: 'Temperature',
    unique_id: 'th1_temp',
    state_topic: 'th1/state',
    device: {
      identifiers: ['th1-a4cf12'],
      manufacturer: 'Acme',
      model: 'TH-1',
      serial_number: 'A4CF12',
      hw_version: 'rev2',
      sw_version: '1.2.3',
      name: 'Hall sensor',
    },
  };
  const abbreviated = {
    name: 'Temperature',
    uniq_id: 'th1_temp',
    stat_t: 'th1/state',
    dev: { ids: 'th1-a4cf12', mf: 'Acme', mdl: 'TH-1', sn: 'A4CF12', hw: 'rev2', sw: '1.2.3', name: 'Hall sensor' },
  };
  const nameplate = {
    manufacturer: 'Acme',
    model: 'TH-1',
    serialNumber: 'A4CF12',
    hardwareRevision: 'rev2',
    firmwareVersion: '1.2.3',
    displayName: 'Hall sensor',
  };

  it.each([
    ['full keys', full],
    ['abbreviated keys', abbreviated],
  ])('reads a config with %s, named after the topic level the broker ties to the publisher', (_name, config) => {
    expect(parseAnnouncement('homeassistant/sensor/th1_temp/config', json(config))).toEqual({
      source: 'homeassistant',
      name: 'th1_temp',
      online: true,
      nameplate,
      details: { protocol: 'homeassistant', component: 'sensor', objectId: 'th1_temp', identifier: 'th1-a4cf12' },
    });
  });

  it('reads the optional node_id level and names the device after it, not after identifiers in the payload', () => {
    const found = parseAnnouncement('homeassistant/binary_sensor/node-1/door/config', json(full));
    expect(found?.name).toBe('node-1');
    expect(found?.details).toEqual({
      protocol: 'homeassistant',
      component: 'binary_sensor',
      nodeId: 'node-1',
      objectId: 'door',
      identifier: 'th1-a4cf12',
    });
  });

  it('falls back to the object_id without a string identifier and ignores non-string fields', () => {
    const config = { name: 'Door', device: { identifiers: [42], model: 7, manufacturer: ['Acme'], sw_version: ' 3.0 ' } };
    expect(parseAnnouncement('homeassistant/binary_sensor/door_1/config', json(config))).toMatchObject({
      name: 'door_1',
      online: true,
      nameplate: { firmwareVersion: '3.0' },
    });
  });

  it('reads an empty payload as the entity removed: offline, named by the node_id', () => {
    expect(parseAnnouncement('homeassistant/sensor/node-1/th1_temp/config', Buffer.alloc(0))).toEqual({
      source: 'homeassistant',
      name: 'node-1',
      online: false,
      nameplate: {},
      details: { protocol: 'homeassistant', component: 'sensor', nodeId: 'node-1', objectId: 'th1_temp' },
    });
  });

  it.each([
    ['a top-level __proto__ key', '{"__proto__":{"polluted":true},"name":"x"}'],
    ['a constructor key inside dev', '{"dev":{"constructor":{"prototype":{"polluted":true}}}}'],
    ['a prototype key inside an array', '{"device":{"identifiers":[{"prototype":1}]}}'],
  ])('refuses %s as MALFORMED without polluting Object.prototype', (_name, payload) => {
    const err = failure('homeassistant/sensor/x/config', Buffer.from(payload));
    expect(err.code).toBe('MALFORMED');
    expect(err.message).toMatch(/forbidden key/);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it.each([
    ['text that is not JSON', Buffer.from('{name: x}')],
    ['a JSON array', Buffer.from('[1,2]')],
    ['JSON null', Buffer.from('null')],
    ['invalid UTF-8', Buffer.from([0x7b, 0xc3, 0x28, 0x7d])],
  ])('refuses %s as MALFORMED', (_name, payload) => {
    expect(failure('homeassistant/sensor/x/config', payload).code).toBe('MALFORMED');
  });

  it.each([
    ['an object_id with a space', 'homeassistant/sensor/th 1/config', full],
    ['a node_id with a dot', 'homeassistant/sensor/node.1/th1/config', full],
    ['an empty component', 'homeassistant//th1/config', full],
  ])('refuses %s with BAD_ID', (_name, topic, config) => {
    expect(failure(topic, json(config)).code).toBe('BAD_ID');
  });

  it('keeps an identifier that is no device id (a MAC with colons) as a detail only', () => {
    const found = parseAnnouncement('homeassistant/sensor/th1/config', json({ device: { identifiers: ['a4:cf:12:00:00:01'] } }));
    expect(found).toMatchObject({ name: 'th1', details: { identifier: 'a4:cf:12:00:00:01' } });
  });

  it('refuses a payload over the default 64 KiB with TOO_LARGE before parsing it', () => {
    const err = failure('homeassistant/sensor/x/config', Buffer.alloc(65_537, 0x20));
    expect(err.code).toBe('TOO_LARGE');
    expect(err.message).toMatch(/65537 bytes exceeds the 65536-byte limit/);
  });
});

describe('AnnouncementError', () => {
  it.each<[AnnouncementErrorCode, string, Buffer, number | undefined]>([
    ['TOO_LARGE', 'spBv1.0/g/NBIRTH/n', Buffer.alloc(11), 10],
    ['MALFORMED', 'spBv1.0/g/NBIRTH/n', Buffer.from([0x12, 0x05]), undefined],
    ['BAD_ID', 'spBv1.0/g/NBIRTH/bad id', Buffer.alloc(0), undefined],
  ])('carries code %s, its class name and the topic in details', (code, topic, payload, max) => {
    const err = failure(topic, payload, max);
    expect(err.code).toBe(code);
    expect(err.name).toBe('AnnouncementError');
    expect(err.details).toMatchObject({ topic });
  });
});
