import { describe, expect, it } from 'vitest';
import { BatchSchedule } from '../../agent/sync/schedule.js';

describe('the batch schedule of the upstream sync', () => {
  it('keeps a failed batch from every worker until its own time, and sync now ends every wait', () => {
    const s = new BatchSchedule();
    s.retryAt('a', 5_000);
    s.retryAt('b', 3_000);
    expect([s.due('a', 1_000), s.due('b', 1_000), s.due('c', 1_000)]).toEqual([false, false, true]);
    expect(s.earliest(['a', 'b', 'c'], 1_000)).toBe(3_000);
    expect(s.due('b', 3_000)).toBe(true);
    s.wakeAll();
    expect([s.due('a', 1_000), s.earliest(['a', 'b'], 1_000)]).toEqual([true, undefined]);
  });

  it('counts a receiver up only if it accepted another batch since the first 5xx of this one (or since the split that made a half)', () => {
    const s = new BatchSchedule();
    s.accepted(900);
    expect(s.serverError('a', 1_000)).toBe(1);
    expect(s.serverError('a', 1_500)).toBe(2);
    // A 200 from before the first 5xx proves nothing: a receiver that went down since answers this way too.
    expect(s.receiverUp('a')).toBe(false);
    s.accepted(1_200);
    expect(s.receiverUp('a')).toBe(true);

    s.halves(['h1', 'h2'], 2_000);
    expect([s.isHalf('h1'), s.isHalf('a')]).toEqual([true, false]);
    s.serverError('h1', 2_500);
    expect(s.receiverUp('h1')).toBe(false);
    // Its sibling, sent at the same moment, accepted: the item at fault is in this half.
    s.accepted(2_100);
    expect(s.receiverUp('h1')).toBe(true);
    s.keepOnly(new Set(['h1']));
    expect(s.isHalf('h2')).toBe(false);
  });
});
