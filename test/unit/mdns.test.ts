import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encode } from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { announcementUrls, opcuaAnnouncements, OPCUA_SERVICE, recordsOf } from '../../agent/transport/mdnsBrowser.js';
import { REPO } from '../helpers/daemon.js';

const recorded = JSON.parse(readFileSync(join(REPO, 'test/fixtures/mdns/lds-me-responses.json'), 'utf8')) as {
  servers: { applicationUri: string; url: string }[];
  responses: string[];
};
const records = (...hex: string[]) => hex.flatMap((h) => recordsOf(Buffer.from(h, 'hex')));

describe('mDNS announcements of OPC UA servers', () => {
  it('reads the servers an LDS-ME announced (recorded packets), and marks the LDS itself', () => {
    const found = opcuaAnnouncements(records(...recorded.responses));
    const servers = found.filter((a) => !a.caps.includes('LDS'));
    expect(servers.flatMap(announcementUrls).sort()).toEqual(recorded.servers.map((s) => s.url).sort());
    expect(servers.map((a) => a.instance).sort()).toEqual(recorded.servers.map((s) => `${s.applicationUri}._opcua-tcp._tcp.local`).sort());
    // The LDS names its host only (no A record in the answer): no URL is made up for it.
    const lds = found.find((a) => a.caps.includes('LDS'))!;
    expect(lds).toMatchObject({ port: 4840, path: '/DiscoveryServer', addresses: [] });
    expect(announcementUrls(lds)).toEqual([]);
  });

  it('takes a host name from an A record in the same answer, with the TXT path', () => {
    const packet = encode({
      type: 'response',
      answers: [{ type: 'PTR', name: OPCUA_SERVICE, data: 'Press 7._opcua-tcp._tcp.local' }],
      additionals: [
        { type: 'SRV', name: 'Press 7._opcua-tcp._tcp.local', data: { port: 4841, target: 'plc-7.local', priority: 0, weight: 0 } },
        { type: 'TXT', name: 'Press 7._opcua-tcp._tcp.local', data: ['caps=DA,HD', 'path=/ua/press'] },
        { type: 'A', name: 'plc-7.local', data: '10.20.0.31' },
      ],
    });
    const [a] = opcuaAnnouncements(recordsOf(packet));
    expect(a).toMatchObject({ instance: 'Press 7._opcua-tcp._tcp.local', host: 'plc-7.local', caps: ['DA', 'HD'], addresses: ['10.20.0.31'] });
    expect(announcementUrls(a!)).toEqual(['opc.tcp://10.20.0.31:4841/ua/press']);
  });

  it('leaves out incomplete and malformed announcements, and ignores queries', () => {
    const packet = encode({
      type: 'response',
      answers: [
        { type: 'PTR', name: OPCUA_SERVICE, data: 'no-srv._opcua-tcp._tcp.local' },
        { type: 'PTR', name: OPCUA_SERVICE, data: 'bad-path._opcua-tcp._tcp.local' },
        { type: 'PTR', name: '_http._tcp.local', data: 'web._http._tcp.local' },
      ],
      additionals: [
        { type: 'SRV', name: 'bad-path._opcua-tcp._tcp.local', data: { port: 4840, target: '10.0.0.5', priority: 0, weight: 0 } },
        { type: 'TXT', name: 'bad-path._opcua-tcp._tcp.local', data: ['path=/a b\u0001', 'caps=LDS;rm -rf,DA'] },
        { type: 'SRV', name: 'web._http._tcp.local', data: { port: 80, target: '10.0.0.6', priority: 0, weight: 0 } },
      ],
    });
    const found = opcuaAnnouncements(recordsOf(packet));
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ host: '10.0.0.5', path: '/', caps: ['DA'] });
    expect(recordsOf(encode({ type: 'query', questions: [{ name: OPCUA_SERVICE, type: 'PTR' }] }))).toEqual([]);
  });
});
