import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { SignalHandler } from '../../agent/lifecycle/signals.js';

function harness() {
  const target = new EventEmitter();
  const calls: string[] = [];
  const handler = new SignalHandler({
    target,
    onStop: (s) => calls.push(`stop ${s}`),
    onForce: (s) => calls.push(`force ${s}`),
    onReload: () => calls.push('reload'),
  });
  handler.install();
  return { target, calls, handler };
}

describe('SignalHandler', () => {
  it('stops on the first SIGTERM and forces on the second', () => {
    const { target, calls } = harness();
    target.emit('SIGTERM');
    target.emit('SIGTERM');
    expect(calls).toEqual(['stop SIGTERM', 'force SIGTERM']);
  });

  it('treats SIGINT after SIGTERM as the second signal', () => {
    const { target, calls } = harness();
    target.emit('SIGINT');
    target.emit('SIGTERM');
    expect(calls).toEqual(['stop SIGINT', 'force SIGTERM']);
  });

  it('reloads on SIGHUP, but not once a stop has begun', () => {
    const { target, calls } = harness();
    target.emit('SIGHUP');
    target.emit('SIGTERM');
    target.emit('SIGHUP');
    expect(calls).toEqual(['reload', 'stop SIGTERM']);
  });

  it('forces on the first signal after a stop that began for another reason', () => {
    const { target, calls, handler } = harness();
    handler.markStopping();
    target.emit('SIGTERM');
    expect(calls).toEqual(['force SIGTERM']);
  });

  it('removes its listeners on uninstall', () => {
    const { target, calls, handler } = harness();
    handler.uninstall();
    target.emit('SIGTERM');
    expect(calls).toEqual([]);
    expect(target.listenerCount('SIGHUP')).toBe(0);
  });
});
