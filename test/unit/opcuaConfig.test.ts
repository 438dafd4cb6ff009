import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { defaultConfigurationConfig } from '../../agent/config/configurationSchema.js';
import { OpcuaConfigDeliverer } from '../../agent/configuration/opcuaConfig.js';
import type { ConfigStatus, ConfigurationHub, DesiredConfig, Observation } from '../../agent/configuration/types.js';
import { EventBus } from '../../agent/events.js';
import { DeviceLocks } from '../../agent/onboarding/deviceLocks.js';
import type { ConfigServer, ObserveResult, OpcuaConfigSessions } from '../../agent/transport/opcuaConfigSession.js';

const log = pino({ level: 'silent' });

/**
 * When the OPC UA deliverer reads servers back (the drift checks), with a
 * fake hub and fake sessions: which servers, how many at once, and the
 * check when a server is seen again. The sessions themselves run against a
 * real server in test/integration/config/opcuaSession.test.ts.
 */
describe('OPC UA drift checks: which servers, when, how many at once', () => {
  let bus: EventBus;
  let observed: { deviceId: string; observation: Observation }[];
  let reads: string[];
  let running: number;
  let most: number;
  let release: (() => void)[];
  let hold: boolean;
  const devices = new Map<string, { online: boolean; status: ConfigStatus }>();
  const desired = (deviceId: string): DesiredConfig => ({
    deviceId,
    protocol: 'opcua',
    name: deviceId,
    profile: 'p',
    version: 1,
    sha256: 'x',
    values: { a: 1 },
    nodes: { a: { nodeId: 'ns=1;s=A', dataType: 'Int32' } },
    reapplyOnDrift: false,
  });
  const hub: ConfigurationHub = {
    register: () => undefined,
    unregister: () => undefined,
    reported: () => ({ accepted: false }),
    current: () => [...devices.keys()].map(desired),
    observed: (deviceId, observation) => void observed.push({ deviceId, observation }),
  };
  const sessions = {
    observe: async (server: ConfigServer): Promise<ObserveResult> => {
      reads.push(server.url);
      most = Math.max(most, ++running);
      if (hold) await new Promise<void>((r) => release.push(r));
      running--;
      return { kind: 'observed', observation: { observed: { a: 1 }, differences: [] } };
    },
  } as unknown as OpcuaConfigSessions;
  let deliverer: OpcuaConfigDeliverer;
  const make = (concurrency = 16) =>
    new OpcuaConfigDeliverer({
      log,
      config: () => ({ ...defaultConfigurationConfig(), concurrency, opcuaDriftCheckSeconds: 60 }),
      devices: { get: (id: string) => (devices.has(id) ? ({ online: devices.get(id)!.online } as never) : undefined) },
      server: (id) => ({ url: id, certificate: Buffer.alloc(0), user: { username: 'u', password: 'p' }, timeoutMs: 1000 }),
      hub,
      sessions: async () => sessions,
      locked: (id, work) => new DeviceLocks().run(id, work),
      bus,
      statusOf: (id) => devices.get(id)?.status,
    });

  beforeEach(() => {
    bus = new EventBus(log);
    observed = [];
    reads = [];
    running = 0;
    most = 0;
    release = [];
    hold = false;
    devices.clear();
  });
  afterEach(async () => {
    hold = false;
    for (const r of release.splice(0)) r();
    await deliverer?.stop();
    vi.useRealTimers();
  });

  it('reads back only servers in sync or drifted, and online', async () => {
    devices.set('opcua:in-sync', { online: true, status: 'in_sync' });
    devices.set('opcua:drifted', { online: true, status: 'drifted' });
    devices.set('opcua:pending', { online: true, status: 'pending' });
    devices.set('opcua:failed', { online: true, status: 'failed' });
    devices.set('opcua:offline', { online: false, status: 'in_sync' });
    deliverer = make();
    await deliverer.checkDrift();
    expect(reads.sort()).toEqual(['opcua:drifted', 'opcua:in-sync']);
    expect(observed.map((o) => o.deviceId).sort()).toEqual(['opcua:drifted', 'opcua:in-sync']);
  });

  it('checks every opcuaDriftCheckSeconds', async () => {
    vi.useFakeTimers();
    devices.set('opcua:a', { online: true, status: 'in_sync' });
    deliverer = make();
    deliverer.start();
    await vi.advanceTimersByTimeAsync(59_000);
    expect(reads).toEqual([]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(reads).toEqual(['opcua:a']);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(reads).toEqual(['opcua:a', 'opcua:a']);
  });

  it('checks a server at once when it is seen again after being offline, and not on other changes', async () => {
    devices.set('opcua:a', { online: false, status: 'in_sync' });
    devices.set('opcua:b', { online: true, status: 'in_sync' });
    deliverer = make();
    deliverer.start();
    bus.emit('device.changed', { deviceId: 'opcua:b' });
    bus.emit('device.changed', { deviceId: 'mqtt:x' });
    devices.get('opcua:a')!.online = true;
    bus.emit('device.changed', { deviceId: 'opcua:a' });
    await vi.waitFor(() => expect(observed.map((o) => o.deviceId)).toEqual(['opcua:a']));
    // Online again, and again: one check, for the change from offline.
    bus.emit('device.changed', { deviceId: 'opcua:a' });
    await new Promise((r) => setTimeout(r, 20));
    expect(reads).toEqual(['opcua:a']);
  });

  it('reads at most configuration.concurrency servers at once, and a check under way covers the next call', async () => {
    for (let i = 0; i < 7; i++) devices.set(`opcua:${i}`, { online: true, status: 'in_sync' });
    hold = true;
    deliverer = make(3);
    const first = deliverer.checkDrift();
    const second = deliverer.checkDrift();
    await vi.waitFor(() => expect(running).toBe(3));
    while (reads.length < 7 || running > 0) {
      for (const r of release.splice(0)) r();
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all([first, second]);
    expect(most).toBe(3);
    expect(reads).toHaveLength(7);
  });

  it('does not tell the hub about a server whose status moved on while it was read (a new version committed)', async () => {
    devices.set('opcua:a', { online: true, status: 'in_sync' });
    hold = true;
    deliverer = make();
    const check = deliverer.checkDrift();
    await vi.waitFor(() => expect(running).toBe(1));
    devices.get('opcua:a')!.status = 'pending';
    for (const r of release.splice(0)) r();
    await check;
    expect(observed).toEqual([]);
  });
});
