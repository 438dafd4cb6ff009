import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DesiredConfig, OpcuaDataType } from '../../../agent/configuration/types.js';
import { OpcuaConfigSessions, type ConfigServer } from '../../../agent/transport/opcuaConfigSession.js';
import { OpcuaProbe } from '../../../agent/transport/opcuaProbe.js';
import { OpcuaPushSessions } from '../../../agent/transport/opcuaPushSession.js';
import { tempDir } from '../../helpers/daemon.js';
import { clientPkiIn, startOpcuaServer, type OpcuaServerHandle } from '../../helpers/opcuaServer.js';

const log = pino({ level: 'silent' });
const ADMIN = { username: 'secadmin', password: 'Config-1-secret' };
const OPERATOR = { username: 'operator', password: 'op-secret' };

/**
 * The configuration session against a real node-opcua 2.157 server with
 * writable configuration variables: validate everything, write once, read
 * back; and the refusals that leave every value as it was.
 */
describe('OPC UA configuration session (validate all, write, read back)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let server: OpcuaServerHandle;
  let probe: OpcuaProbe;
  let sessions: OpcuaConfigSessions;
  let target: ConfigServer;

  const node = (id: string, dataType: OpcuaDataType) => ({ nodeId: server.config!.nodeId(id), dataType });
  const desired = (values: DesiredConfig['values'], nodes: DesiredConfig['nodes']) => ({ values, nodes });
  const good = () =>
    desired(
      { interval: 250.5, gain: 0.1, threshold: -42, channel: 65_535, enabled: true, label: 'press-7 line 2' },
      {
        interval: node('Config.SamplingIntervalMs', 'Double'),
        gain: node('Config.Gain', 'Float'),
        threshold: node('Config.AlarmThreshold', 'Int32'),
        channel: node('Config.Channel', 'UInt16'),
        enabled: node('Config.Enabled', 'Boolean'),
        label: node('Config.Label', 'String'),
      },
    );
  const ids = ['Config.SamplingIntervalMs', 'Config.Gain', 'Config.AlarmThreshold', 'Config.Channel', 'Config.Enabled', 'Config.Label'];
  const snapshot = () => Object.fromEntries(ids.map((id) => [id, server.config!.value(id)]));
  const writes = () => ids.reduce((n, id) => n + server.config!.writes(id), 0);

  beforeAll(async () => {
    tmp = tempDir();
    server = await startOpcuaServer({
      host: '127.0.0.2',
      applicationUri: 'urn:plant9:press-7',
      securityModes: 'secure',
      pushManagement: { securityAdmin: ADMIN, users: [OPERATOR] },
      configNodes: true,
    });
    // The agent's side: its own application certificate (self-signed here; the daemon's comes from the gateway CA).
    const pki = await clientPkiIn(join(tmp.dir, 'agent-pki'), { applicationUri: 'urn:test:edge-agent', acceptUnknownServers: true });
    await pki.certificateManager.dispose();
    probe = new OpcuaProbe({
      log,
      pkiDir: join(tmp.dir, 'agent-pki'),
      applicationUri: 'urn:test:edge-agent',
      certificateFile: join(tmp.dir, 'agent-pki', 'own', 'certs', 'client_certificate.pem'),
      privateKeyFile: join(tmp.dir, 'agent-pki', 'own', 'private', 'private_key.pem'),
    });
    await probe.init();
    sessions = new OpcuaConfigSessions(probe, new OpcuaPushSessions(probe, log), log);
    target = { url: server.endpointUrl, certificate: server.certificate, user: ADMIN, timeoutMs: 10_000 };
  }, 60_000);

  afterAll(async () => {
    await probe?.dispose();
    await server?.stop();
    tmp?.cleanup();
  });

  it('writes every value in one go, reads them back and answers verified (Float compared as float32)', async () => {
    const outcome = await sessions.apply(target, good());
    expect(outcome).toEqual({ kind: 'verified', observed: good().values });
    expect(snapshot()).toEqual({
      'Config.SamplingIntervalMs': 250.5,
      'Config.Gain': Math.fround(0.1),
      'Config.AlarmThreshold': -42,
      'Config.Channel': 65_535,
      'Config.Enabled': true,
      'Config.Label': 'press-7 line 2',
    });
    const read = await sessions.observe(target, good());
    expect(read).toEqual({ kind: 'observed', observation: { observed: good().values, differences: [] } });
  });

  it('delivers the same configuration again (a restart, a redelivery): nothing written, verified', async () => {
    const writesBefore = writes();
    expect(await sessions.apply(target, good())).toEqual({ kind: 'verified', observed: good().values });
    // Float by its float32 value: 0.1 as the JSON number, 0.10000000149011612 on the server.
    expect(await sessions.apply(target, good())).toEqual({ kind: 'verified', observed: good().values });
    expect(writes()).toBe(writesBefore);
  });

  it('writes only the value that differs, and reads back every one', async () => {
    const perNode = () => Object.fromEntries(ids.map((id) => [id, server.config!.writes(id)]));
    server.config!.setValue('Config.Label', 'changed at the machine');
    const before = perNode();
    expect(await sessions.apply(target, good())).toEqual({ kind: 'verified', observed: good().values });
    expect(perNode()).toEqual({ ...before, 'Config.Label': before['Config.Label']! + 1 });
    expect(server.config!.value('Config.Label')).toBe('press-7 line 2');
  });

  it('finds a value changed on the server behind its back', async () => {
    server.config!.setValue('Config.AlarmThreshold', 7);
    const read = await sessions.observe(target, good());
    expect(read).toMatchObject({
      kind: 'observed',
      observation: {
        observed: { threshold: 7 },
        differences: [{ key: 'threshold', nodeId: server.config!.nodeId('Config.AlarmThreshold'), expected: -42, actual: 7 }],
      },
    });
    expect((await sessions.apply(target, good())).kind).toBe('verified');
    expect(server.config!.value('Config.AlarmThreshold')).toBe(-42);
  });

  const refusals: { name: string; change: (d: ReturnType<typeof good>) => void; reason: RegExp }[] = [
    {
      name: 'a NodeId that does not exist',
      change: (d) => (d.nodes!.gain = { nodeId: 'ns=1;s=Config.NoSuchNode', dataType: 'Float' }),
      reason: /gain \(ns=1;s=Config\.NoSuchNode\): no such node \(BadNodeIdUnknown\)/,
    },
    {
      name: 'a data type other than the node has',
      change: (d) => (d.nodes!.threshold = node('Config.AlarmThreshold', 'Double')),
      reason: /threshold \(ns=\d+;s=Config\.AlarmThreshold\): its data type is Int32, the profile binds Double/,
    },
    {
      name: 'a read-only node',
      change: (d) => {
        d.values.firmware = '9.9.9';
        d.nodes!.firmware = node('Config.FirmwareVersion', 'String');
      },
      reason: /firmware \(ns=\d+;s=Config\.FirmwareVersion\): read-only/,
    },
    {
      name: 'a value outside its type’s range',
      change: (d) => (d.values.channel = 70_000),
      reason: /channel \(ns=\d+;s=Config\.Channel\): 70000 is outside UInt16's range 0 to 65535/,
    },
    { name: 'a value of the wrong JSON type', change: (d) => (d.values.enabled = 'yes'), reason: /enabled .*"yes" is not a Boolean/ },
    { name: 'a key without a node', change: (d) => delete d.nodes!.label, reason: /no node bound for label/ },
    { name: 'a string that is no NodeId', change: (d) => (d.nodes!.label = { nodeId: 'not a node id', dataType: 'String' }), reason: /is not a NodeId/ },
  ];
  for (const { name, change, reason } of refusals) {
    it(`refuses the whole configuration for ${name}, writing nothing`, async () => {
      const before = snapshot();
      const writesBefore = writes();
      const d = good();
      // Values the server does not hold yet: had anything been written, it would show.
      Object.assign(d.values, { interval: 999, label: 'must not be written' });
      change(d);
      const outcome = await sessions.apply(target, d);
      expect(outcome).toMatchObject({ kind: 'failed', retry: false });
      expect((outcome as { reason: string }).reason).toMatch(reason);
      expect((outcome as { reason: string }).reason).toMatch(/^configuration refused, nothing written: /);
      expect(snapshot()).toEqual(before);
      expect(writes()).toBe(writesBefore);
    });
  }

  it('names every node at fault at once', async () => {
    const d = good();
    d.nodes!.gain = { nodeId: 'ns=1;s=Config.Missing', dataType: 'Float' };
    d.nodes!.enabled = node('Config.Enabled', 'Int32');
    d.values.enabled = 1;
    const outcome = await sessions.apply(target, d);
    expect((outcome as { reason: string }).reason).toMatch(/gain .*no such node.*; enabled .*its data type is Boolean/);
  });

  it('refuses a node the user may not write (UserAccessLevel), and writes it as the user who may', async () => {
    const d = good();
    d.values.calibration = 0.25;
    d.nodes!.calibration = node('Config.CalibrationOffset', 'Double');
    const outcome = await sessions.apply({ ...target, user: OPERATOR }, d);
    expect(outcome).toMatchObject({ kind: 'failed', retry: false });
    expect((outcome as { reason: string }).reason).toMatch(
      /calibration \(ns=\d+;s=Config\.CalibrationOffset\): not writable by operator \(its UserAccessLevel has no CurrentWrite\)/,
    );
    expect(server.config!.value('Config.CalibrationOffset')).toBe(0);
    expect(await sessions.apply(target, d)).toMatchObject({ kind: 'verified' });
    expect(server.config!.value('Config.CalibrationOffset')).toBe(0.25);
  });

  it('answers retry when the server refuses the credentials (a password file may be mended)', async () => {
    const outcome = await sessions.apply({ ...target, user: { ...ADMIN, password: 'wrong' } }, good());
    expect(outcome).toMatchObject({ kind: 'failed', retry: true });
    expect((outcome as { reason: string }).reason).toContain(server.endpointUrl);
  });

  it('sends nothing to a server presenting another certificate than the one pinned', async () => {
    const other = await startOpcuaServer({ host: '127.0.0.3', securityModes: 'secure', pushManagement: { securityAdmin: ADMIN }, configNodes: true });
    try {
      const outcome = await sessions.apply({ ...target, url: other.endpointUrl }, good());
      expect(outcome).toMatchObject({ kind: 'failed', retry: true });
      expect((outcome as { reason: string }).reason).toMatch(/presents certificate [0-9a-f]{40}, not the one pushed to it/);
      expect(other.config!.writes('Config.Label')).toBe(0);
    } finally {
      await other.stop();
    }
  });

  it('writes and reads back 64-bit integers (decimal strings) and small integer types', async () => {
    const wide = await startOpcuaServer({
      host: '127.0.0.5',
      securityModes: 'secure',
      pushManagement: { securityAdmin: ADMIN },
      configNodes: [
        { id: 'Config.Counter', dataType: 'Int64', initial: [0, 0] },
        { id: 'Config.Serial', dataType: 'UInt64', initial: [0, 0] },
        { id: 'Config.Mode', dataType: 'Byte', initial: 0 },
      ],
    });
    try {
      const at = { ...target, url: wide.endpointUrl, certificate: wide.certificate };
      const nodes = {
        counter: { nodeId: wide.config!.nodeId('Config.Counter'), dataType: 'Int64' as const },
        serial: { nodeId: wide.config!.nodeId('Config.Serial'), dataType: 'UInt64' as const },
        mode: { nodeId: wide.config!.nodeId('Config.Mode'), dataType: 'Byte' as const },
      };
      const values = { counter: '-9223372036854775807', serial: '18446744073709551615', mode: 255 };
      expect(await sessions.apply(at, { values, nodes })).toEqual({ kind: 'verified', observed: values });
      expect(wide.config!.value('Config.Serial')).toEqual([0xffff_ffff, 0xffff_ffff]);
      // A JSON number is the same Int64 as its decimal string.
      expect(await sessions.apply(at, { values: { ...values, counter: -5 }, nodes })).toMatchObject({ kind: 'verified' });
      // Int64 by value: the decimal string of what the server holds is no change, nothing written.
      const wideWrites = () => ['Config.Counter', 'Config.Serial', 'Config.Mode'].reduce((n, id) => n + wide.config!.writes(id), 0);
      const writesBefore = wideWrites();
      expect(await sessions.apply(at, { values: { ...values, counter: '-5' }, nodes })).toEqual({
        kind: 'verified',
        observed: { ...values, counter: '-5' },
      });
      expect(wideWrites()).toBe(writesBefore);
      expect(await sessions.observe(at, { values: { ...values, counter: '-5' }, nodes })).toMatchObject({ observation: { differences: [] } });
      wide.config!.setValue('Config.Counter', [0, 5]);
      expect(await sessions.observe(at, { values, nodes })).toMatchObject({
        observation: { observed: { counter: '5' }, differences: [{ key: 'counter', expected: '-9223372036854775807', actual: '5' }] },
      });
    } finally {
      await wide.stop();
    }
  });

  it('answers retry for a server that is not there', async () => {
    const outcome = await sessions.apply({ ...target, url: 'opc.tcp://127.0.0.4:1', timeoutMs: 3_000 }, good());
    expect(outcome).toMatchObject({ kind: 'failed', retry: true });
  });
});
