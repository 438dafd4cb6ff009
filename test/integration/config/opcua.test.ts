import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { opcuaScene, type OpcuaScene } from './opcuaScene.js';

/** The shortest the schema allows: drift is looked for every 10 s. */
const DRIFT_CHECK_SECONDS = 10;

/**
 * Configuration of an OPC UA server end to end: a real node-opcua 2.157
 * server with configuration variables, provisioned by the push, then
 * profiles applied through the API: written, read back, in sync; changed
 * behind the agent's back and found drifted at the next check; written
 * again where the profile says so; and the profiles the server cannot
 * take, refused with nothing written.
 */
describe('OPC UA configuration delivery (profiles written to a provisioned server)', () => {
  let scene: OpcuaScene;

  beforeAll(async () => {
    scene = await opcuaScene({ host: '127.0.0.2', plant: 'plant7', driftCheckSeconds: DRIFT_CHECK_SECONDS });
  }, 180_000);

  afterAll(async () => {
    await scene?.dispose();
  });

  it('writes a profile, reads it back and reports the server in sync (API and /metrics)', async () => {
    await scene.apply(scene.profile('press-sampling', { reapplyOnDrift: false }));
    const c = await scene.reaches('press-sampling', 'in_sync');
    expect(c).toMatchObject({ version: 1, error: null });
    expect(scene.server()).toEqual({
      'Config.SamplingIntervalMs': 250.5,
      'Config.Gain': Math.fround(0.1),
      'Config.AlarmThreshold': -42,
      'Config.Channel': 3,
      'Config.Enabled': true,
      'Config.Label': 'press-sampling',
    });
    expect(await scene.metric('in_sync')).toBe(1);
  });

  it('finds a value changed on the server behind its back at the next drift check, and leaves it (reapplyOnDrift false)', async () => {
    const before = scene.writes();
    scene.press.config!.setValue('Config.AlarmThreshold', 7);
    const c = await scene.reaches('press-sampling', 'drifted');
    expect(c.error).toContain('threshold: expected -42, read 7');
    expect(await scene.metric('drifted')).toBe(1);
    // Not written again: the profile does not say so.
    await scene.until('a later drift check', async () => ((await scene.configuration()).checkedAt !== c.checkedAt ? true : undefined));
    expect((await scene.configuration()).status).toBe('drifted');
    expect(scene.press.config!.value('Config.AlarmThreshold')).toBe(7);
    expect(scene.writes()).toBe(before);
  });

  it('writes the values again when the profile says reapplyOnDrift, and is in sync after', async () => {
    await scene.apply(scene.profile('press-self-healing', { reapplyOnDrift: true }));
    await scene.reaches('press-self-healing', 'in_sync');
    const before = scene.press.config!.writes('Config.Channel');
    scene.press.config!.setValue('Config.Channel', 9);
    // Back to 3 only by the agent's write, after a check found 9.
    await scene.until('the channel written again', async () => (scene.press.config!.value('Config.Channel') === 3 ? true : undefined));
    expect(scene.press.config!.writes('Config.Channel')).toBe(before + 1);
    await scene.reaches('press-self-healing', 'in_sync');
  });

  it('delivers values the server already holds without writing them, and writes only the one that differs', async () => {
    const held = scene.server();
    const before = scene.writes();
    // Another profile, the same values: a new delivery, nothing for the server to take.
    await scene.apply(scene.profile('press-same-values', { values: { label: held['Config.Label'] as string } }));
    expect(await scene.reaches('press-same-values', 'in_sync')).toMatchObject({ error: null });
    expect(scene.writes()).toBe(before);
    expect(scene.server()).toEqual(held);
    const channel = scene.press.config!.writes('Config.Channel');
    await scene.apply(scene.profile('press-one-change', { values: { label: held['Config.Label'] as string, channel: 4 } }));
    await scene.reaches('press-one-change', 'in_sync');
    expect(scene.press.config!.writes('Config.Channel')).toBe(channel + 1);
    expect(scene.writes()).toBe(before + 1);
    expect(scene.server()).toEqual({ ...held, 'Config.Channel': 4 });
  });

  // Functions: the fixture's NodeIds are known once it runs.
  const refusals: { name: string; extra: () => Parameters<OpcuaScene['profile']>[1]; reason: RegExp }[] = [
    {
      name: 'a NodeId that does not exist',
      extra: () => ({ nodes: { gain: { nodeId: 'ns=1;s=Config.NoSuchNode', dataType: 'Float' } } }),
      reason: /gain \(ns=1;s=Config\.NoSuchNode\): no such node \(BadNodeIdUnknown\)/,
    },
    {
      name: 'a wrong data type',
      extra: () => ({ nodes: { threshold: scene.node('Config.AlarmThreshold', 'Double') } }),
      reason: /threshold \(ns=\d+;s=Config\.AlarmThreshold\): its data type is Int32, the profile binds Double/,
    },
    {
      name: 'a read-only node',
      extra: () => ({ values: { firmware: '9.9.9' }, nodes: { firmware: scene.node('Config.FirmwareVersion', 'String') } }),
      reason: /firmware \(ns=\d+;s=Config\.FirmwareVersion\): read-only/,
    },
  ];
  for (const [i, { name, extra, reason }] of refusals.entries()) {
    it(`refuses a profile with ${name}: failed with the reason, no value written`, async () => {
      const values = scene.server();
      const before = scene.writes();
      const doc = scene.profile(`press-refused-${i + 1}`, extra());
      // Values the server does not hold: any write would show.
      Object.assign(doc.values, { intervalMs: 999, label: 'never written' });
      await scene.apply(doc);
      const c = await scene.reaches(doc.name, 'failed');
      expect(c.error).toMatch(reason);
      expect(c.error).toMatch(/^configuration refused, nothing written: /);
      expect(scene.server()).toEqual(values);
      expect(scene.writes()).toBe(before);
      expect(await scene.metric('failed')).toBe(1);
    });
  }
});
