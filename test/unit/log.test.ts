import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LogHub } from '../../agent/log.js';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, destination };
}

describe('LogHub', () => {
  it('never writes a secret value, at the top level or nested', () => {
    const { lines, destination } = capture();
    const hub = new LogHub({ level: 'info', pretty: false, destination });
    hub.child('sync').info({ token: 'tok-123', upstream: { password: 'pw', url: 'https://cmms' }, a: { b: { passphrase: 'pp' } } }, 'x');
    const text = JSON.stringify(lines);
    for (const secret of ['tok-123', '"pw"', '"pp"']) expect(text).not.toContain(secret);
    expect(lines[0]).toMatchObject({ module: 'sync', token: '***', upstream: { password: '***', url: 'https://cmms' } });
  });

  it('matches secret keys by suffix and in any case, however deep', () => {
    const { lines, destination } = capture();
    const hub = new LogHub({ level: 'info', pretty: false, destination });
    hub.root.info(
      { ca: { keyPassphrase: 'SECRET1' }, upstreamToken: 'SECRET2', a: { b: { c: { token: 'SECRET3' } } }, headers: { Authorization: 'Bearer SECRET4' } },
      'deep',
    );
    const text = JSON.stringify(lines);
    for (const secret of ['SECRET1', 'SECRET2', 'SECRET3', 'SECRET4']) expect(text).not.toContain(secret);
    expect(lines[0]).toMatchObject({ ca: { keyPassphrase: '***' }, headers: { Authorization: '***' } });
  });

  it('still writes errors with their message and stack', () => {
    const { lines, destination } = capture();
    new LogHub({ level: 'info', pretty: false, destination }).root.error({ err: new Error('disk full') }, 'failed');
    expect(lines[0]).toMatchObject({ msg: 'failed', err: { message: 'disk full', type: 'Error' } });
  });

  it('changes the level of every module logger at once', () => {
    const { lines, destination } = capture();
    const hub = new LogHub({ level: 'info', pretty: false, destination });
    const a = hub.child('a');
    const b = hub.child('b');
    a.debug('hidden');
    hub.setLevel('debug');
    a.debug('shown a');
    b.debug('shown b');
    hub.child('c').debug('shown c');
    expect(lines.map((l) => l.msg)).toEqual(['shown a', 'shown b', 'shown c']);
    expect(lines[0]).toMatchObject({ level: 'debug', module: 'a' });
    expect(hub.level).toBe('debug');
  });
});
