import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EventBus } from '../../agent/events.js';
import { Wakeups } from '../../agent/sync/wakeups.js';

describe('the event bus', () => {
  it('logs a listener that throws or whose promise rejects, and tells the others all the same', async () => {
    const log = pino({ level: 'silent' });
    const errors: unknown[] = [];
    vi.spyOn(log, 'error').mockImplementation(((fields: unknown) => void errors.push(fields)) as never);
    const bus = new EventBus(log);
    const heard: string[] = [];
    bus.on('device.changed', 'thrower', () => {
      throw new Error('sync down');
    });
    bus.on('device.changed', 'async', async () => {
      throw new Error('later');
    });
    bus.on('device.changed', 'sync', ({ deviceId }) => void heard.push(deviceId));
    expect(() => bus.emit('device.changed', { deviceId: 'mqtt:pump-7' })).not.toThrow();
    await new Promise((r) => setImmediate(r));
    expect(heard).toEqual(['mqtt:pump-7']);
    expect(errors).toEqual([
      expect.objectContaining({ event: 'device.changed', owner: 'thrower' }),
      expect.objectContaining({ event: 'device.changed', owner: 'async' }),
    ]);
    bus.off('sync');
    bus.emit('device.changed', { deviceId: 'mqtt:pump-8' });
    expect(heard).toEqual(['mqtt:pump-7']);
  });
});

describe("the sync workers' wakeups", () => {
  afterEach(() => vi.useRealTimers());

  it('a nudge ends a sleep at once; one told while no worker sleeps ends the next sleep, once', async () => {
    vi.useFakeTimers();
    const w = new Wakeups();
    let woke = false;
    void w.sleep(60_000).then(() => (woke = true));
    w.nudge();
    await vi.advanceTimersByTimeAsync(0);
    expect(woke).toBe(true);

    // Every worker busy (looking at the outbox, sending): the change is kept for the next sleep.
    w.nudge();
    let first = false;
    let second = false;
    void w.sleep(60_000).then(() => (first = true));
    await vi.advanceTimersByTimeAsync(0);
    expect(first).toBe(true);
    void w.sleep(60_000).then(() => (second = true));
    await vi.advanceTimersByTimeAsync(59_999);
    expect(second).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(second).toBe(true);
    w.stop();
  });

  it('wake keeps nothing for later (sync now, reload, stop end the sleeps under way only)', async () => {
    vi.useFakeTimers();
    const w = new Wakeups();
    w.wake();
    let done = false;
    void w.sleep(1_000).then(() => (done = true));
    await vi.advanceTimersByTimeAsync(999);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(done).toBe(true);
  });
});
