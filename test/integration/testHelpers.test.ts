import { describe, expect, it } from 'vitest';
import { Daemon } from '../helpers/daemon.js';

/**
 * The helper the other tests rely on to read a daemon's output: what it
 * returns must be complete when it says so, however the test is scheduled.
 */
describe('the Daemon test helper', () => {
  // A stand-in daemon: a shell whose last log line and stderr message reach the pipes only after it has
  // exited (the worst case of output still in a pipe at 'exit'). The arguments Daemon.start appends,
  // node and main.js, land in $@ and are ignored.
  const late = `sleep 0.3; echo '{"msg":"edge-agent stopped","level":"info"}'; echo 'the last words' >&2`;
  const script = `echo '{"msg":"edge-agent stopping","level":"info"}'; (${late}) & exit 3`;
  const start = () => Daemon.start('/nonexistent.yaml', { prefix: ['sh', '-c', script, 'sh'] });

  it('has every log line and all of stderr once exited resolves', async () => {
    const d = start();
    expect(await d.exited).toEqual({ code: 3, signal: null });
    expect(d.logs.map((l) => l.msg)).toEqual(['edge-agent stopping', 'edge-agent stopped']);
    expect(d.stderr).toBe('the last words\n');
  });

  it('finds a line that arrives after the exit instead of reporting the exit first', async () => {
    const d = start();
    const line = await d.waitForLog((l) => l.msg === 'edge-agent stopped');
    expect(line.level).toBe('info');
    // A line that never comes is reported once the output has ended.
    await expect(d.waitForLog((l) => l.msg === 'never written')).rejects.toThrow(/daemon exited \(3\) before the log line; stderr: the last words/);
  });
});
