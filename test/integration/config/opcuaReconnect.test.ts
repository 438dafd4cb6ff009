import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { opcuaScene, type OpcuaScene } from './opcuaScene.js';

/**
 * The drift check when a server comes back: with the interval an hour away,
 * only the server being seen again (a discovery run finds it after one that
 * marked it offline) can make the agent read it back.
 */
describe('OPC UA configuration: a server seen again after being offline is checked for drift at once', () => {
  let scene: OpcuaScene;

  beforeAll(async () => {
    scene = await opcuaScene({ host: '127.0.0.3', plant: 'plant8', driftCheckSeconds: 3600 });
  }, 180_000);

  afterAll(async () => {
    await scene?.dispose();
  });

  it('finds the values changed while the server was away', async () => {
    await scene.apply(scene.profile('press-away', { reapplyOnDrift: false }));
    await scene.reaches('press-away', 'in_sync');

    // Gone: a discovery run does not find it and marks it offline.
    await scene.press.suspend();
    await scene.discover();
    await scene.until('the server offline', async () => ((await scene.device()).device.online ? undefined : true));
    // Reset at the machine while away.
    scene.press.config!.setValue('Config.Label', 'factory default');
    await scene.press.resume();
    await scene.discover();

    const c = await scene.reaches('press-away', 'drifted');
    expect(c.error).toContain('label: expected "press-away", read "factory default"');
    expect((await scene.device()).device.online).toBe(true);
  });
});
