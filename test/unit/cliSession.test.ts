import { EventEmitter } from 'node:events';
import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NoTokenError, resolveCredential } from '../../agent/cli/apiClient.js';
import { passwordFromStream, promptHidden } from '../../agent/cli/password.js';
import { scopeText } from '../../agent/cli/session.js';
import { readSessionFile, sessionFilePath, writeSessionFile, type SessionRecord } from '../../agent/cli/sessionFile.js';
import type { Config } from '../../agent/config/schema.js';
import { tempDir } from '../helpers/daemon.js';

const URL_A = 'http://127.0.0.1:8080';
const NOW = new Date('2026-06-01T12:00:00Z');
const session = (over: Partial<SessionRecord> = {}): SessionRecord => ({
  token: 'eas_session',
  user: 'anna',
  role: 'technician',
  expiresAt: '2026-06-01T20:00:00Z',
  url: URL_A,
  ...over,
});

describe('the session file of edge-agent login', () => {
  it.each([
    ['EDGE_AGENT_SESSION_FILE wins', { EDGE_AGENT_SESSION_FILE: '/run/s', XDG_CONFIG_HOME: '/x' }, '/run/s'],
    ['else $XDG_CONFIG_HOME/edge-agent/session', { XDG_CONFIG_HOME: '/home/anna/cfg' }, '/home/anna/cfg/edge-agent/session'],
    ['a relative XDG_CONFIG_HOME is ignored (XDG specification)', { XDG_CONFIG_HOME: 'cfg' }, '/home/anna/.config/edge-agent/session'],
    ['else ~/.config/edge-agent/session', {}, '/home/anna/.config/edge-agent/session'],
  ] as const)('path: %s', (_what, env, path) => {
    expect(sessionFilePath(env, () => '/home/anna')).toBe(path);
  });

  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => tmp.cleanup());

  it('is written 0600 in a directory made 0700, whatever the umask, and read back', () => {
    const file = join(tmp.dir, 'cfg', 'edge-agent', 'session');
    const before = process.umask(0o002);
    try {
      writeSessionFile(file, session());
    } finally {
      process.umask(before);
    }
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(tmp.dir, 'cfg', 'edge-agent')).mode & 0o777).toBe(0o700);
    expect(readSessionFile(file)).toEqual({ state: 'ok', session: session() });
    writeSessionFile(file, session({ user: 'ben' }));
    expect(readSessionFile(file)).toMatchObject({ state: 'ok', session: { user: 'ben' } });
  });

  it('is refused when group or others may read it, when another user owns it, or when it is damaged', () => {
    const file = join(tmp.dir, 'session');
    writeSessionFile(file, session());
    chmodSync(file, 0o640);
    expect(readSessionFile(file)).toEqual({ state: 'refused', why: expect.stringContaining('0640 let others read it') });
    chmodSync(file, 0o600);
    const uid = process.getuid!();
    expect(readSessionFile(file, uid + 1)).toEqual({ state: 'refused', why: expect.stringContaining(`owned by uid ${uid}`) });
    writeFileSync(file, '{"token": "x"}', { mode: 0o600 });
    expect(readSessionFile(file).state).toBe('refused');
    expect(readSessionFile(join(tmp.dir, 'none'))).toEqual({ state: 'absent' });
  });
});

describe('the credential a command uses', () => {
  let tmp: ReturnType<typeof tempDir>;
  let config: Config;
  let env: NodeJS.ProcessEnv;
  let warnings: string[];
  const resolve = (o: { token?: string; tokenFile?: string } = {}, url = URL_A) => resolveCredential(config, o, url, env, (l) => warnings.push(l), NOW);
  beforeEach(() => {
    tmp = tempDir();
    const dataDir = join(tmp.dir, 'data');
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, 'admin.token'), 'eat_admin\n');
    writeFileSync(join(tmp.dir, 'token'), 'eat_file\n');
    config = { agent: { dataDir } } as unknown as Config;
    env = { EDGE_AGENT_SESSION_FILE: join(tmp.dir, 'session') };
    writeSessionFile(env.EDGE_AGENT_SESSION_FILE!, session());
    warnings = [];
  });
  afterEach(() => tmp.cleanup());

  it('takes --token, then EDGE_AGENT_TOKEN, then the token file, then the session, then admin.token', () => {
    env.EDGE_AGENT_TOKEN = 'eat_env';
    env.EDGE_AGENT_TOKEN_FILE = join(tmp.dir, 'token');
    expect(resolve({ token: 'eat_flag' })).toEqual({ token: 'eat_flag', source: '--token' });
    expect(resolve()).toEqual({ token: 'eat_env', source: 'EDGE_AGENT_TOKEN' });
    delete env.EDGE_AGENT_TOKEN;
    expect(resolve()).toMatchObject({ token: 'eat_file', source: 'token file' });
    delete env.EDGE_AGENT_TOKEN_FILE;
    expect(resolve({ tokenFile: join(tmp.dir, 'token') })).toMatchObject({ token: 'eat_file', source: 'token file' });
    expect(resolve()).toEqual({ token: 'eas_session', source: 'session file', file: env.EDGE_AGENT_SESSION_FILE, expiresAt: session().expiresAt });
    env.EDGE_AGENT_SESSION_FILE = join(tmp.dir, 'no-session');
    expect(resolve()).toMatchObject({ token: 'eat_admin', source: 'admin.token' });
    expect(warnings).toEqual([]);
  });

  it('passes over a session made against another API url, without a word', () => {
    expect(resolve({}, 'http://127.0.0.1:9090')).toMatchObject({ source: 'admin.token' });
    expect(warnings).toEqual([]);
  });

  it('passes over an expired session, with a hint to log in again', () => {
    writeSessionFile(env.EDGE_AGENT_SESSION_FILE!, session({ expiresAt: '2026-06-01T11:59:59Z' }));
    expect(resolve()).toMatchObject({ source: 'admin.token' });
    expect(warnings).toEqual([expect.stringMatching(/session of anna ended at .*edge-agent login/)]);
  });

  it('passes over a session file others may read, with a warning, and says login when there is nothing else', () => {
    chmodSync(env.EDGE_AGENT_SESSION_FILE!, 0o644);
    expect(resolve()).toMatchObject({ source: 'admin.token' });
    expect(warnings).toEqual([expect.stringContaining(`ignoring the session file ${env.EDGE_AGENT_SESSION_FILE}`)]);
    config = { agent: { dataDir: join(tmp.dir, 'elsewhere') } } as unknown as Config;
    expect(() => resolve()).toThrow(NoTokenError);
    expect(() => resolve()).toThrow(/edge-agent login/);
  });
});

describe('the password of edge-agent login', () => {
  it('is the first line of standard input, without its line end; the rest is not taken', async () => {
    expect(await passwordFromStream(Readable.from([Buffer.from('s3cret pass\r\nsecond line\n')]))).toBe('s3cret pass');
    expect(await passwordFromStream(Readable.from([Buffer.from('no newline')]))).toBe('no newline');
  });

  it('refuses an empty first line or empty input', async () => {
    await expect(passwordFromStream(Readable.from([Buffer.from('\nlater\n')]))).rejects.toThrow(/empty/);
    await expect(passwordFromStream(Readable.from([]))).rejects.toThrow(/empty/);
  });

  /** A terminal in raw mode: what the user types arrives as data. */
  const terminal = () => {
    const t = Object.assign(new EventEmitter(), { raw: [] as boolean[], setRawMode: (m: boolean) => t.raw.push(m), resume: () => t, pause: () => t });
    return t;
  };

  it('is asked without echo: nothing typed is written, Backspace and Ctrl-U edit, raw mode is left at the end', async () => {
    const t = terminal();
    let shown = '';
    const answer = promptHidden('password for anna: ', t, { write: (s: string) => (shown += s) });
    t.emit('data', Buffer.from('wrong\u0015pa'));
    t.emit('data', Buffer.from('sx\u007fs\r'));
    expect(await answer).toBe('pass');
    expect(shown).toBe('password for anna: \n');
    expect(t.raw).toEqual([true, false]);
  });

  it('is abandoned at Ctrl-C', async () => {
    const t = terminal();
    const answer = promptHidden('password: ', t, { write: () => true });
    t.emit('data', Buffer.from('abc\u0003'));
    expect(await answer).toBeUndefined();
    expect(t.raw).toEqual([true, false]);
  });
});

describe('scope as printed', () => {
  it('names each part, or the whole plant', () => {
    expect(scopeText(undefined)).toBe('whole plant');
    expect(scopeText([{ site: 'plant-1', line: 'L3' }, { site: 'plant-2' }])).toBe('site plant-1 line L3; site plant-2');
  });
});
