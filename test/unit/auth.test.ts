import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addressKey, allowed, authenticate, FailureCounter, hashSecret, newTokenSecret, PERMISSIONS } from '../../agent/api/auth.js';
import { Store } from '../../agent/store/database.js';
import { UserRepository } from '../../agent/store/userRepository.js';
import { tempDir } from '../helpers/daemon.js';

describe('API tokens and roles', () => {
  let tmp: ReturnType<typeof tempDir>;
  let store: Store;
  let users: UserRepository;
  beforeAll(() => {
    tmp = tempDir();
    ({ store } = Store.open(
      { path: join(tmp.dir, 'agent.db'), busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    ));
    users = new UserRepository(store);
  });
  afterAll(() => {
    store.close();
    tmp.cleanup();
  });
  const issue = (name: string, role: 'admin' | 'technician' | 'viewer', expiresAt?: Date) => {
    const user = users.byName(name) ?? users.add(name, role, 'test');
    const secret = newTokenSecret();
    const token = store.durable(() => users.addToken(user.id, hashSecret(secret), 'test', expiresAt));
    return { user, secret, token };
  };

  it('accepts a valid token, and stores only its hash', () => {
    const { secret, user } = issue('tech-a', 'technician');
    const r = authenticate(`Bearer ${secret}`, users);
    expect(r).toMatchObject({ ok: true, user: { name: 'tech-a', role: 'technician', id: user.id } });
    store.db.pragma('wal_checkpoint(TRUNCATE)');
    expect(readFileSync(join(tmp.dir, 'agent.db')).includes(Buffer.from(secret))).toBe(false);
    expect(readFileSync(join(tmp.dir, 'agent.db')).includes(Buffer.from(hashSecret(secret)))).toBe(true);
  });

  it('refuses a missing, malformed, unknown, expired or revoked token, and a disabled user', () => {
    expect(authenticate(undefined, users)).toEqual({ ok: false, failure: 'missing' });
    expect(authenticate('Basic dXNlcjpwYXNz', users)).toEqual({ ok: false, failure: 'malformed' });
    expect(authenticate('Bearer eat_short', users)).toEqual({ ok: false, failure: 'malformed' });
    expect(authenticate(`Bearer ${newTokenSecret()}`, users)).toEqual({ ok: false, failure: 'unknown' });
    const expired = issue('viewer-b', 'viewer', new Date(Date.now() - 1000));
    expect(authenticate(`Bearer ${expired.secret}`, users)).toMatchObject({
      ok: false,
      failure: 'expired',
      token: { id: expired.token.id },
      user: { name: 'viewer-b' },
    });
    const revoked = issue('viewer-b', 'viewer');
    users.revokeToken(revoked.token.id);
    expect(authenticate(`Bearer ${revoked.secret}`, users)).toMatchObject({ ok: false, failure: 'revoked', token: { id: revoked.token.id } });
    const later = issue('contractor-c', 'viewer');
    expect(authenticate(`Bearer ${later.secret}`, users).ok).toBe(true);
    users.disable(later.user.id);
    expect(authenticate(`Bearer ${later.secret}`, users)).toMatchObject({ ok: false, failure: 'disabled', user: { name: 'contractor-c' } });
  });

  it('gives each role what the table says, and a viewer nothing that changes anything', () => {
    for (const [permission, roles] of Object.entries(PERMISSIONS)) {
      for (const role of ['admin', 'technician', 'viewer'] as const)
        expect(allowed(role, permission as keyof typeof PERMISSIONS)).toBe((roles as readonly string[]).includes(role));
    }
    expect(
      Object.keys(PERMISSIONS)
        .filter((p) => allowed('viewer', p as keyof typeof PERMISSIONS))
        .every((p) => p.endsWith('.read')),
    ).toBe(true);
    expect(Object.keys(PERMISSIONS).filter((p) => !allowed('admin', p as keyof typeof PERMISSIONS))).toEqual([]);
    expect(allowed('technician', 'users.manage')).toBe(false);
    expect(allowed('technician', 'certificates.revoke')).toBe(false);
  });

  it('counts failures per key within the window, with bounded memory, and says how long until a key is under its limit', () => {
    const counter = new FailureCounter(3, 1_000, 2);
    expect([0, 100, 200].map((t) => counter.fail('10.0.0.9', t))).toEqual([false, false, true]);
    expect(counter.over('10.0.0.9', 300)).toBe(true);
    expect(counter.waitMs('10.0.0.9', 300)).toBe(700);
    expect(counter.over('10.0.0.10', 300)).toBe(false);
    // Many more failures keep only the latest `limit` times.
    for (let t = 300; t < 400; t++) counter.fail('10.0.0.9', t);
    expect(counter.waitMs('10.0.0.9', 400)).toBe(997);
    expect(counter.over('10.0.0.9', 1_397)).toBe(false);
    // At most two keys: the least recent goes.
    counter.fail('a', 500);
    counter.fail('b', 500);
    counter.fail('a', 501);
    counter.fail('a', 502);
    expect(counter.over('a', 503)).toBe(true);
    counter.fail('c', 504);
    expect(counter.over('a', 505)).toBe(true);
    expect(counter.waitMs('b', 505)).toBe(0);
  });

  it('counts an IPv4 address by itself and an IPv6 one by its /64', () => {
    expect(addressKey('127.0.0.1')).toBe('127.0.0.1');
    expect(addressKey('::ffff:10.0.0.9')).toBe('::ffff:10.0.0.9');
    expect(addressKey('2001:db8:0:1:aaaa::1')).toBe('2001:db8:0:1::/64');
    expect(addressKey('2001:db8:0:1:bbbb:cccc:dddd:eeee')).toBe('2001:db8:0:1::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
  });
});
