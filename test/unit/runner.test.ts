import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ServiceStartError, TimeoutError } from '../../agent/errors.js';
import { ServiceRunner } from '../../agent/lifecycle/runner.js';
import type { Service } from '../../agent/lifecycle/service.js';

const log = pino({ level: 'silent' });

/** A service that records what happens to it in a shared journal. */
function service(name: string, journal: string[], behaviour: { start?: (s: AbortSignal) => Promise<void>; stop?: () => Promise<void> } = {}): Service {
  return {
    name,
    async start(signal) {
      journal.push(`start ${name}`);
      await behaviour.start?.(signal);
    },
    async stop() {
      journal.push(`stop ${name}`);
      await behaviour.stop?.();
    },
  };
}

const timeouts = { startMs: 1_000, stopMs: 1_000 };

describe('ServiceRunner', () => {
  it('starts in order and stops in reverse order', async () => {
    const journal: string[] = [];
    const runner = new ServiceRunner({ log, services: ['a', 'b', 'c'].map((n) => service(n, journal)), timeouts });
    await runner.startAll(new AbortController().signal);
    expect(runner.allUp()).toBe(true);
    await runner.stopAll();
    expect(journal).toEqual(['start a', 'start b', 'start c', 'stop c', 'stop b', 'stop a']);
    expect(runner.states().map((s) => s.state)).toEqual(['stopped', 'stopped', 'stopped']);
  });

  it('starts services added once the first are up after them, and stops all in reverse (the lock and the store last)', async () => {
    const journal: string[] = [];
    const runner = new ServiceRunner({ log, services: ['lock', 'store'].map((n) => service(n, journal)), timeouts });
    await runner.startAll(new AbortController().signal);
    runner.add(['ca', 'http'].map((n) => service(n, journal)));
    expect(runner.states().map((s) => `${s.name} ${s.state}`)).toEqual(['lock up', 'store up', 'ca idle', 'http idle']);
    await runner.startAll(new AbortController().signal);
    await runner.stopAll();
    expect(journal).toEqual(['start lock', 'start store', 'start ca', 'start http', 'stop http', 'stop ca', 'stop store', 'stop lock']);
  });

  it('stops the first services too when an added one fails to start', async () => {
    const journal: string[] = [];
    const runner = new ServiceRunner({ log, services: ['lock', 'store'].map((n) => service(n, journal)), timeouts });
    await runner.startAll(new AbortController().signal);
    runner.add([service('ca', journal, { start: () => Promise.reject(new Error('no CA')) })]);
    await expect(runner.startAll(new AbortController().signal)).rejects.toBeInstanceOf(ServiceStartError);
    expect(journal).toEqual(['start lock', 'start store', 'start ca', 'stop ca', 'stop store', 'stop lock']);
  });

  it('stops what started, in reverse, when a service fails to start, and names the cause', async () => {
    const journal: string[] = [];
    const states: string[] = [];
    const runner = new ServiceRunner({
      log,
      services: [service('a', journal), service('b', journal, { start: () => Promise.reject(new Error('disk full')) }), service('c', journal)],
      timeouts,
      onStateChange: (name, state) => states.push(`${name}:${state}`),
    });
    const failure = await runner.startAll(new AbortController().signal).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ServiceStartError);
    expect((failure as Error).message).toBe('b failed to start');
    expect(((failure as Error).cause as Error).message).toBe('disk full');
    expect(journal).toEqual(['start a', 'start b', 'stop b', 'stop a']);
    expect(runner.states().map((s) => [s.name, s.state])).toEqual([
      ['a', 'stopped'],
      ['b', 'failed'],
      ['c', 'idle'],
    ]);
    expect(runner.states()[1]!.error).toBe('disk full');
    expect(states).toContain('a:up');
  });

  it('gives up on a start that exceeds its timeout and aborts the signal that service was given', async () => {
    const journal: string[] = [];
    let seen: AbortSignal | undefined;
    const runner = new ServiceRunner({
      log,
      services: [
        service('slow', journal, {
          start: (signal) => {
            seen = signal;
            return new Promise(() => undefined);
          },
        }),
      ],
      timeouts: { startMs: 50, stopMs: 1_000 },
    });
    const failure = await runner.startAll(new AbortController().signal).catch((e: unknown) => e);
    expect((failure as Error).cause).toBeInstanceOf(TimeoutError);
    expect(seen?.aborted).toBe(true);
    expect(journal).toEqual(['start slow', 'stop slow']);
  });

  it('abandons a stop that exceeds its timeout and still stops the others', async () => {
    const journal: string[] = [];
    const runner = new ServiceRunner({
      log,
      services: [service('a', journal), service('hangs', journal, { stop: () => new Promise(() => undefined) }), service('c', journal)],
      timeouts: { startMs: 1_000, stopMs: 50 },
    });
    await runner.startAll(new AbortController().signal);
    await runner.stopAll();
    expect(journal).toEqual(['start a', 'start hangs', 'start c', 'stop c', 'stop hangs', 'stop a']);
    expect(runner.states().map((s) => s.state)).toEqual(['stopped', 'failed', 'stopped']);
    expect(runner.states()[1]!.error).toMatch(/stop of hangs took longer than 50 ms/);
  });

  it('passes the shutdown signal through to the service that is starting', async () => {
    const shutdown = new AbortController();
    const journal: string[] = [];
    const runner = new ServiceRunner({
      log,
      services: [
        service('waits', journal, {
          start: (signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true })),
        }),
        service('never', journal),
      ],
      timeouts,
    });
    const pending = runner.startAll(shutdown.signal).catch((e: unknown) => e);
    shutdown.abort();
    expect(await pending).toBeInstanceOf(ServiceStartError);
    expect(journal).toEqual(['start waits', 'stop waits']);
  });
});
