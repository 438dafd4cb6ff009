import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SystemdNotifier } from '../../agent/lifecycle/sdNotify.js';

const log = pino({ level: 'silent' });
const notifier = (env: NodeJS.ProcessEnv) => new SystemdNotifier({ log, env });

describe('SystemdNotifier', () => {
  afterEach(() => vi.useRealTimers());

  it('pings at half of WATCHDOG_USEC, only for this process, and only under a notify socket', () => {
    expect(notifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '30000000' }).watchdogIntervalMs()).toBe(15_000);
    expect(notifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '400000', WATCHDOG_PID: String(process.pid) }).watchdogIntervalMs()).toBe(200);
    expect(notifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '400000', WATCHDOG_PID: '1' }).watchdogIntervalMs()).toBeUndefined();
    expect(notifier({ WATCHDOG_USEC: '400000' }).watchdogIntervalMs()).toBeUndefined();
    expect(notifier({ NOTIFY_SOCKET: '/run/x' }).watchdogIntervalMs()).toBeUndefined();
    expect(notifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: 'nonsense' }).watchdogIntervalMs()).toBeUndefined();
  });

  it('is a no-op without NOTIFY_SOCKET, and off for an abstract socket it cannot address', () => {
    expect(notifier({}).enabled).toBe(false);
    expect(notifier({ NOTIFY_SOCKET: '@/org/systemd/notify' }).enabled).toBe(false);
    expect(notifier({ NOTIFY_SOCKET: '/run/systemd/notify' }).enabled).toBe(true);
  });

  it('sends WATCHDOG=1 every half period while healthy and withholds it while not', () => {
    vi.useFakeTimers();
    const n = notifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '1000000' });
    const sent: Record<string, string | number>[] = [];
    vi.spyOn(n, 'send').mockImplementation((fields) => void sent.push(fields));
    let healthy = true;
    n.startWatchdog(() => healthy);
    expect(sent).toHaveLength(1); // one ping at once
    vi.advanceTimersByTime(499);
    expect(sent).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(sent).toHaveLength(2);
    healthy = false;
    vi.advanceTimersByTime(2_000);
    expect(sent).toHaveLength(2);
    healthy = true;
    vi.advanceTimersByTime(500);
    expect(sent).toHaveLength(3);
    expect(sent.every((f) => f.WATCHDOG === 1)).toBe(true);
    n.close();
    vi.advanceTimersByTime(5_000);
    expect(sent).toHaveLength(3);
  });
});
