import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addressKey,
  authenticate,
  FailureCounter,
  hashSecret,
  newSessionSecret,
  newConsoleSecret,
  newTokenSecret,
  PERMISSIONS,
  permitted,
  refusal,
} from '../../agent/api/auth.js';
import { inScope } from '../../agent/api/principal.js';
import { ConsoleSessionRepository } from '../../agent/store/consoleSessionRepository.js';
import { SessionRepository } from '../../agent/store/sessionRepository.js';
import { Store } from '../../agent/store/database.js';
import { UserRepository } from '../../agent/store/userRepository.js';
import { tempDir } from '../helpers/daemon.js';

describe('API tokens and roles', () => {
  let tmp: ReturnType<typeof tempDir>;
  let store: Store;
  let users: UserRepository;
  let sessions: SessionRepository;
  let consoleSessions: ConsoleSessionRepository;
  let repos: { users: UserRepository; sessions: SessionRepository; consoleSessions: ConsoleSessionRepository };
  beforeAll(() => {
    tmp = tempDir();
    ({ store } = Store.open(
      { path: join(tmp.dir, 'agent.db'), busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    ));
    users = new UserRepository(store);
    sessions = new SessionRepository(store);
    consoleSessions = new ConsoleSessionRepository(store);
    repos = { users, sessions, consoleSessions };
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
    const r = authenticate(`Bearer ${secret}`, repos);
    expect(r).toMatchObject({ ok: true, principal: { name: 'tech-a', role: 'technician', source: 'local', user: { id: user.id } } });
    store.db.pragma('wal_checkpoint(TRUNCATE)');
    expect(readFileSync(join(tmp.dir, 'agent.db')).includes(Buffer.from(secret))).toBe(false);
    expect(readFileSync(join(tmp.dir, 'agent.db')).includes(Buffer.from(hashSecret(secret)))).toBe(true);
  });

  it('takes a console secret from the cookie only, for as long as its sign-in and its credential both last', () => {
    const { secret: token, token: record } = issue('tech-console', 'technician');
    const cookie = newConsoleSecret();
    store.durable(() => consoleSessions.create(hashSecret(cookie), hashSecret(token), 'token', undefined));
    expect(authenticate(`Bearer ${cookie}`, repos, new Date(), true)).toMatchObject({
      ok: true,
      principal: { name: 'tech-console' },
      secretSha256: hashSecret(token),
    });
    // Never as a Bearer token (it would skip the CSRF rule), and a token is never a cookie.
    expect(authenticate(`Bearer ${cookie}`, repos)).toEqual({ ok: false, failure: 'malformed' });
    expect(authenticate(`Bearer ${token}`, repos, new Date(), true)).toEqual({ ok: false, failure: 'malformed' });
    expect(authenticate(`Bearer ${newConsoleSecret()}`, repos, new Date(), true)).toEqual({ ok: false, failure: 'unknown' });
    // Its credential revoked: the cookie is refused as the token is.
    users.revokeToken(record.id);
    expect(authenticate(`Bearer ${cookie}`, repos, new Date(), true)).toMatchObject({ ok: false, failure: 'revoked' });
    // Signed out, or past its end: refused whatever the credential.
    const other = issue('tech-console', 'technician');
    const [signedOut, ending] = [newConsoleSecret(), newConsoleSecret()];
    store.durable(() => consoleSessions.create(hashSecret(signedOut), hashSecret(other.secret), 'token', undefined));
    store.durable(() => consoleSessions.create(hashSecret(ending), hashSecret(other.secret), 'token', new Date(Date.now() + 60_000)));
    expect(consoleSessions.end(hashSecret(signedOut))).toBe(true);
    expect(consoleSessions.end(hashSecret(signedOut))).toBe(false);
    expect(authenticate(`Bearer ${signedOut}`, repos, new Date(), true)).toMatchObject({ ok: false, failure: 'ended' });
    expect(authenticate(`Bearer ${ending}`, repos, new Date(), true).ok).toBe(true);
    expect(authenticate(`Bearer ${ending}`, repos, new Date(Date.now() + 120_000), true)).toMatchObject({ ok: false, failure: 'expired' });
    store.db.pragma('wal_checkpoint(TRUNCATE)');
    expect(readFileSync(join(tmp.dir, 'agent.db')).includes(Buffer.from(cookie))).toBe(false);
  });

  it('refuses a missing, malformed, unknown, expired or revoked token, and a disabled user', () => {
    expect(authenticate(undefined, repos)).toEqual({ ok: false, failure: 'missing' });
    expect(authenticate('Basic dXNlcjpwYXNz', repos)).toEqual({ ok: false, failure: 'malformed' });
    expect(authenticate('Bearer eat_short', repos)).toEqual({ ok: false, failure: 'malformed' });
    expect(authenticate(`Bearer ${newTokenSecret()}`, repos)).toEqual({ ok: false, failure: 'unknown' });
    const expired = issue('viewer-b', 'viewer', new Date(Date.now() - 1000));
    expect(authenticate(`Bearer ${expired.secret}`, repos)).toMatchObject({
      ok: false,
      failure: 'expired',
      credential: `token ${expired.token.id}`,
      name: 'viewer-b',
    });
    const revoked = issue('viewer-b', 'viewer');
    users.revokeToken(revoked.token.id);
    expect(authenticate(`Bearer ${revoked.secret}`, repos)).toMatchObject({ ok: false, failure: 'revoked', credential: `token ${revoked.token.id}` });
    const later = issue('contractor-c', 'viewer');
    expect(authenticate(`Bearer ${later.secret}`, repos).ok).toBe(true);
    users.disable(later.user.id);
    expect(authenticate(`Bearer ${later.secret}`, repos)).toMatchObject({ ok: false, failure: 'disabled', name: 'contractor-c' });
  });

  it('gives each role what the table says, and a viewer nothing that changes anything', () => {
    for (const [permission, row] of Object.entries(PERMISSIONS)) {
      for (const role of ['admin', 'technician', 'viewer'] as const)
        expect(permitted({ role }, permission as keyof typeof PERMISSIONS)).toBe((row.roles as readonly string[]).includes(role));
    }
    expect(
      Object.keys(PERMISSIONS)
        .filter((p) => permitted({ role: 'viewer' }, p as keyof typeof PERMISSIONS))
        .every((p) => p.endsWith('.read')),
    ).toBe(true);
    expect(Object.keys(PERMISSIONS).filter((p) => !permitted({ role: 'admin' }, p as keyof typeof PERMISSIONS))).toEqual([]);
    expect(permitted({ role: 'technician' }, 'users.manage')).toBe(false);
    expect(permitted({ role: 'technician' }, 'certificates.revoke')).toBe(false);
  });

  it('gives a contractor only what reaches their scope, decisions only with mayDecide, and a scoped technician nothing plant-wide', () => {
    const scope = [{ line: 'L2' }];
    const contractor = { role: 'contractor' as const, scope };
    const granted = (who: Parameters<typeof permitted>[0]) => Object.keys(PERMISSIONS).filter((p) => permitted(who, p as keyof typeof PERMISSIONS));
    expect(granted(contractor)).toEqual(['devices.read', 'status.read', 'discovery.read', 'discovery.run']);
    expect(granted({ ...contractor, mayDecide: true })).toEqual(['devices.read', 'status.read', 'discovery.read', 'discovery.run', 'devices.decide']);
    expect(refusal(contractor, 'devices.decide')).toMatch(/mayDecide/);
    expect(refusal(contractor, 'sync.read')).toMatch(/contractor role may not/);
    // A technician with a scope keeps what is about devices and runs, and loses every plant-wide permission.
    const technician = granted({ role: 'technician', scope });
    expect(technician).toEqual(['devices.read', 'status.read', 'discovery.read', 'discovery.run', 'devices.decide', 'devices.annotate', 'config.assign']);
    expect(refusal({ role: 'technician', scope }, 'audit.read')).toMatch(/scoped to part of the plant/);
    for (const p of Object.keys(PERMISSIONS) as (keyof typeof PERMISSIONS)[])
      if (PERMISSIONS[p].reach === 'plant') expect(permitted({ role: 'admin', scope }, p), p).toBe(false);
  });

  it('places a device inside a scope by its own location, else the gateway one, field by field', () => {
    const gateway = { site: 'Plant-A', area: '', line: '', cell: '' };
    expect(inScope(undefined, undefined, gateway)).toBe(true);
    expect(inScope([{ line: 'L2' }], { line: 'L2' }, gateway)).toBe(true);
    expect(inScope([{ line: 'L2' }], { line: 'L3' }, gateway)).toBe(false);
    expect(inScope([{ line: 'L2' }], undefined, gateway)).toBe(false);
    expect(inScope([{ site: 'Plant-A', line: 'L2' }], { line: 'L2' }, gateway)).toBe(true);
    expect(inScope([{ site: 'Plant-B', line: 'L2' }], { line: 'L2' }, gateway)).toBe(false);
    expect(inScope([{ line: 'L3' }, { area: 'Press' }], { area: 'Press', line: 'L9' }, gateway)).toBe(true);
    // Names compare exactly: a look-alike line is another line.
    expect(inScope([{ line: 'L2' }], { line: 'l2' }, gateway)).toBe(false);
  });

  it('accepts a live directory session, and refuses one ended, expired, or of a user disabled on the gateway', () => {
    const now = new Date();
    const person = store.durable(() => sessions.upsertUser({ guid: 'a'.repeat(32), dn: 'CN=Anna,DC=plant,DC=test', name: 'anna' }, now));
    const open = (expiresAt: Date) => {
      const secret = newSessionSecret();
      const session = store.durable(() =>
        sessions.create({
          userId: person.id,
          secretSha256: hashSecret(secret),
          role: 'contractor',
          grant: { scope: [{ line: 'L2' }] },
          cached: false,
          address: '127.0.0.1',
          expiresAt,
          now,
        }),
      );
      return { secret, session };
    };
    const live = open(new Date(Date.now() + 60_000));
    expect(authenticate(`Bearer ${live.secret}`, repos)).toMatchObject({
      ok: true,
      principal: { name: 'anna', role: 'contractor', source: 'directory', scope: [{ line: 'L2' }], session: { id: live.session.id } },
    });
    expect(authenticate(`Bearer ${newSessionSecret()}`, repos)).toEqual({ ok: false, failure: 'unknown' });
    expect(authenticate(`Bearer eas_${'x'.repeat(42)}`, repos)).toEqual({ ok: false, failure: 'malformed' });
    const old = open(new Date(Date.now() - 1));
    expect(authenticate(`Bearer ${old.secret}`, repos)).toMatchObject({ ok: false, failure: 'expired', name: 'anna' });
    store.durable(() => sessions.end(live.session.id, 'logout', new Date()));
    expect(authenticate(`Bearer ${live.secret}`, repos)).toMatchObject({ ok: false, failure: 'ended', credential: `session ${live.session.id}` });
    const other = open(new Date(Date.now() + 60_000));
    store.durable(() => sessions.disableUser(person.id, new Date()));
    expect(authenticate(`Bearer ${other.secret}`, repos)).toMatchObject({ ok: false, failure: 'disabled' });
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
