import { describe, expect, it } from 'vitest';
import { DeviceLocks } from '../../agent/onboarding/deviceLocks.js';

describe('device locks', () => {
  it('runs holders of one device one after the other, in order, and other devices alongside', async () => {
    const locks = new DeviceLocks();
    const order: string[] = [];
    let releaseFirst!: () => void;
    const gate = new Promise<void>((r) => (releaseFirst = r));
    const first = locks.run('a', async () => {
      order.push('a1 start');
      await gate;
      order.push('a1 end');
    });
    const second = locks.run('a', async () => void order.push('a2'));
    const other = locks.run('b', async () => void order.push('b1'));
    await other;
    expect(locks.isBusy('a')).toBe(true);
    expect(order).toEqual(['a1 start', 'b1']);
    releaseFirst();
    await Promise.all([first, second]);
    expect(order).toEqual(['a1 start', 'b1', 'a1 end', 'a2']);
    expect(locks.isBusy('a')).toBe(false);
  });

  it('releases the lock when a holder throws', async () => {
    const locks = new DeviceLocks();
    await expect(locks.run('a', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await locks.run('a', async () => 'next')).toBe('next');
  });
});
