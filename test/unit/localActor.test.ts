import { describe, expect, it } from 'vitest';
import { localActor, passwdName } from '../../agent/cli/localActor.js';

/** A passwd database of three accounts. */
const passwd: Record<number, string> = { 0: 'root', 1000: 'anna', 1001: 'edge-agent' };
const lookup = (uid: number) => passwd[uid];

describe('localActor: who a --local change is audited as', () => {
  it.each([
    ['a plain user, whatever the variables claim', 1000, { SUDO_USER: 'tech-bob', SUDO_UID: '1001', USER: 'tech-bob' }, 'anna'],
    ['a non-root user run through sudo -u (the variables cannot be checked)', 1001, { SUDO_USER: 'anna', SUDO_UID: '1000' }, 'edge-agent'],
    ['root without sudo', 0, { USER: 'anna' }, 'root'],
    ['root through sudo: SUDO_UID is anna and anna is SUDO_USER', 0, { SUDO_USER: 'anna', SUDO_UID: '1000' }, 'root (sudo: anna)'],
    ['root with a SUDO_USER that is no account', 0, { SUDO_USER: 'tech-anna', SUDO_UID: '1000' }, 'root'],
    ['root with a SUDO_UID of another account', 0, { SUDO_USER: 'anna', SUDO_UID: '1001' }, 'root'],
    ['root with a SUDO_UID that is no account', 0, { SUDO_USER: 'anna', SUDO_UID: '4242' }, 'root'],
    ['root with SUDO_USER but no SUDO_UID', 0, { SUDO_USER: 'anna' }, 'root'],
    ['root with a SUDO_UID that is not a number', 0, { SUDO_USER: 'anna', SUDO_UID: '1000abc' }, 'root'],
    ['root with SUDO_UID 0 (root ran sudo)', 0, { SUDO_USER: 'root', SUDO_UID: '0' }, 'root'],
    ['a uid without a passwd entry', 5555, { SUDO_USER: 'anna', SUDO_UID: '1000' }, 'uid 5555'],
  ] as const)('%s', (_what, uid, env, actor) => {
    expect(localActor(env, uid, lookup)).toBe(actor);
  });

  it('reads the real passwd database: this process, root, and a uid that has no entry', () => {
    const uid = process.getuid!();
    expect(passwdName(uid)).toMatch(/^[a-z_][a-z0-9_.-]*\$?$/i);
    expect(passwdName(0)).toBe('root');
    expect(passwdName(2_000_000_123)).toBeUndefined();
  });
});
