import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allowed, authenticate, FailureLimiter, hashSecret, newTokenSecret, PERMISSIONS } from '../../agent/api/auth.js';
import { Store } from '../../agent/store/database.js';
import { UserRepository } from '../../agent/store/userRepository.js';
import { tempDir } from '../helpers/daemon.js';

describe('API tokens and roles', () => {
  let tmp: ReturnType<typeof tempDir>;
  let store: Store;
  let users: UserRepository;
  beforeAll(() => {
    tmp = tempDir();
    ({ store } = Store.open({ path: join(tmp.dir, 'agent.db'), busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' }, pino({ level: 'silent' })));
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
    expect(authenticate(`Bearer ${expired.secret}`, users)).toEqual({ ok: false, failure: 'expired' });
    const revoked = issue('viewer-b', 'viewer');
    users.revokeToken(revoked.token.id);
    expect(authenticate(`Bearer ${revoked.secret}`, users)).toEqual({ ok: false, failure: 'revoked' });
    const later = issue('contractor-c', 'viewer');
    expect(authenticate(`Bearer ${later.secret}`, users).ok).toBe(true);
    users.disable(later.user.id);
    expect(authenticate(`Bearer ${later.secret}`, users)).toEqual({ ok: false, failure: 'disabled' });
  });

  it('gives each role what the table says, and a viewer nothing that changes anything', () => {
    for (const [permission, roles] of Object.entries(PERMISSIONS)) {
      for (const role of ['admin', 'technician', 'viewer'] as const) expect(allowed(role, permission as keyof typeof PERMISSIONS)).toBe((roles as readonly string[]).includes(role));
    }
    expect(Object.keys(PERMISSIONS).filter((p) => allowed('viewer', p as keyof typeof PERMISSIONS)).every((p) => p.endsWith('.read'))).toBe(true);
    expect(Object.keys(PERMISSIONS).filter((p) => !allowed('admin', p as keyof typeof PERMISSIONS))).toEqual([]);
    expect(allowed('technician', 'users.manage')).toBe(false);
    expect(allowed('technician', 'certificates.revoke')).toBe(false);
  });

  it('blocks an address after repeated failures, for the window only', () => {
    const limiter = new FailureLimiter(3, 1_000);
    for (let i = 0; i < 3; i++) {
      expect(limiter.blocked('10.0.0.9', 100 * i)).toBe(false);
      limiter.fail('10.0.0.9', 100 * i);
    }
    expect(limiter.blocked('10.0.0.9', 300)).toBe(true);
    expect(limiter.blocked('10.0.0.10', 300)).toBe(false);
    expect(limiter.blocked('10.0.0.9', 1_250)).toBe(false);
  });
});
