import { describe, expect, it } from 'vitest';
import { defaultAuthConfig, directorySchema, type GroupMapping } from '../../agent/config/authSchema.js';
import { accessOf, sameAccess } from '../../agent/directory/grants.js';
import type { DirectoryAccount } from '../../agent/directory/types.js';

const now = new Date('2026-12-05T12:00:00Z');
const account = (groups: string[], more: Partial<DirectoryAccount> = {}): DirectoryAccount => ({
  guid: '0'.repeat(32),
  dn: 'CN=Anna,OU=Staff,DC=plant,DC=test',
  name: 'anna',
  disabled: false,
  locked: false,
  groups: groups.map((g) => ({ dn: `CN=${g},OU=Groups,DC=plant,DC=test`, name: g })),
  ...more,
});
const MAPPINGS: GroupMapping[] = [
  { group: 'Gateway-Admins', role: 'admin' },
  { group: 'CN=Maintenance-Leads,OU=Groups,DC=plant,DC=test', role: 'technician' },
  { group: 'Plant-Viewers', role: 'viewer' },
  { group: 'Contractors-Line2', role: 'contractor', scope: [{ line: 'L2' }], until: '2027-03-31', mayDecide: true, ranges: ['10.2.0.0/24'] },
  { group: 'Contractors-Line3', role: 'contractor', scope: [{ line: 'L3' }], until: '2026-12-31' },
  { group: 'Contractors-Old', role: 'contractor', scope: [{ line: 'L9' }], until: '2026-01-31' },
  { group: 'Line4-Leads', role: 'technician', scope: [{ site: 'Plant-A', line: 'L4' }] },
];

describe('access from directory groups', () => {
  it('gives the strongest role of the mapped groups, matching a mapping by group name or DN without regard to case', () => {
    expect(accessOf(account(['plant-viewers', 'Maintenance-Leads']), MAPPINGS, now)).toMatchObject({ ok: true, role: 'technician', grant: {} });
    expect(accessOf(account(['Plant-Viewers', 'Contractors-Line2']), MAPPINGS, now)).toMatchObject({ ok: true, role: 'contractor' });
    expect(accessOf(account(['Gateway-Admins', 'Contractors-Line2']), MAPPINGS, now)).toEqual({
      ok: true,
      role: 'admin',
      grant: {},
      groups: ['Gateway-Admins'],
    });
  });

  it('refuses a user in no mapped group, saying which groups they are in, and a disabled, locked or expired account', () => {
    expect(accessOf(account(['Canteen']), MAPPINGS, now)).toMatchObject({ ok: false, refusal: 'no-group', why: expect.stringContaining('groups: Canteen') });
    expect(accessOf(account(['Plant-Viewers'], { disabled: true }), MAPPINGS, now)).toMatchObject({ ok: false, refusal: 'disabled' });
    expect(accessOf(account(['Plant-Viewers'], { locked: true }), MAPPINGS, now)).toMatchObject({ ok: false, refusal: 'locked' });
    expect(accessOf(account(['Plant-Viewers'], { expiresAt: new Date('2026-12-05T11:59:59Z') }), MAPPINGS, now)).toMatchObject({
      ok: false,
      refusal: 'expired',
    });
  });

  it('gives a contractor the union of their mappings scopes, mayDecide and ranges, and the latest end, never past the account expiry', () => {
    const both = accessOf(account(['Contractors-Line2', 'Contractors-Line3']), MAPPINGS, now);
    expect(both).toEqual({
      ok: true,
      role: 'contractor',
      grant: { scope: [{ line: 'L2' }, { line: 'L3' }], mayDecide: true, ranges: ['10.2.0.0/24'], until: '2027-03-31T23:59:59.999Z' },
      groups: ['Contractors-Line2', 'Contractors-Line3'],
    });
    const leaving = accessOf(account(['Contractors-Line2'], { expiresAt: new Date('2027-01-15T00:00:00Z') }), MAPPINGS, now);
    expect(leaving).toMatchObject({ ok: true, grant: { until: '2027-01-15T00:00:00.000Z' } });
  });

  it('ends a mapping after its until day, and refuses a contractor with no end at all', () => {
    expect(accessOf(account(['Contractors-Old']), MAPPINGS, now)).toMatchObject({
      ok: false,
      refusal: 'mapping-ended',
      why: expect.stringContaining('2026-01-31'),
    });
    // The last day counts whole: until 2026-12-05 still lets in at noon that day.
    const today: GroupMapping[] = [{ group: 'Temp', role: 'contractor', scope: [{ line: 'L1' }], until: '2026-12-05' }];
    expect(accessOf(account(['Temp']), today, now)).toMatchObject({ ok: true, grant: { until: '2026-12-05T23:59:59.999Z' } });
    const endless: GroupMapping[] = [{ group: 'Temp', role: 'contractor', scope: [{ line: 'L1' }] }];
    expect(accessOf(account(['Temp']), endless, now)).toMatchObject({ ok: false, refusal: 'no-end-date' });
    expect(accessOf(account(['Temp'], { expiresAt: new Date('2027-06-01T00:00:00Z') }), endless, now)).toMatchObject({
      ok: true,
      grant: { until: '2027-06-01T00:00:00.000Z' },
    });
  });

  it('scopes a technician only when every technician mapping of theirs has a scope', () => {
    expect(accessOf(account(['Line4-Leads']), MAPPINGS, now)).toMatchObject({
      ok: true,
      role: 'technician',
      grant: { scope: [{ site: 'Plant-A', line: 'L4' }] },
    });
    expect(accessOf(account(['Line4-Leads', 'Maintenance-Leads']), MAPPINGS, now)).toMatchObject({ ok: true, role: 'technician', grant: {} });
  });

  it('tells a changed role or grant from the same one', () => {
    expect(sameAccess({ role: 'viewer', grant: {} }, { role: 'viewer', grant: {} })).toBe(true);
    expect(sameAccess({ role: 'viewer', grant: {} }, { role: 'technician', grant: {} })).toBe(false);
    expect(sameAccess({ role: 'contractor', grant: { scope: [{ line: 'L2' }] } }, { role: 'contractor', grant: { scope: [{ line: 'L3' }] } })).toBe(false);
  });
});

describe('auth.directory in the configuration', () => {
  const base = { ...defaultAuthConfig().directory, enabled: true, url: 'ldaps://dc1.plant.example', caFile: '/etc/ca.pem', baseDn: 'DC=plant,DC=example' };
  const problems = (d: unknown) => {
    const r = directorySchema.safeParse(d);
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };

  it('takes the example of docs/directory.md', () => {
    expect(problems({ ...base, groups: [{ group: 'Maintenance-Leads', role: 'technician' }] })).toEqual([]);
  });

  it('refuses, each with its reason: no url or mapping when enabled, a plain URL with a path, a contractor without scope, an admin with one', () => {
    expect(problems({ ...base, url: '', groups: [] })).toEqual([
      'url: auth.directory.enabled needs auth.directory.url',
      'groups: map at least one group to a role: a directory user in no mapped group has no access',
    ]);
    expect(problems({ ...base, url: 'ldaps://dc1/DC=plant', groups: [{ group: 'G', role: 'viewer' }] })[0]).toMatch(/^url: must be ldaps/);
    expect(problems({ ...base, url: 'http://dc1', groups: [{ group: 'G', role: 'viewer' }] })[0]).toMatch(/^url: must be ldaps/);
    expect(problems({ ...base, groups: [{ group: 'C', role: 'contractor' }] })).toEqual(['groups.0.scope: a contractor mapping needs a scope']);
    expect(problems({ ...base, groups: [{ group: 'A', role: 'admin', scope: [{ line: 'L1' }] }] })[0]).toMatch(/give admin no scope/);
    expect(problems({ ...base, groups: [{ group: 'T', role: 'technician', mayDecide: true }] })[0]).toMatch(/only a contractor mapping takes mayDecide/);
    expect(problems({ ...base, groups: [{ group: 'C', role: 'contractor', scope: [{}] }] })[0]).toMatch(/give site, area, line or several/);
    // The service password may come from the systemd credential: no file is needed in the configuration (the daemon says at start if none is there).
    expect(problems({ ...base, bindDn: 'CN=svc', groups: [{ group: 'G', role: 'viewer' }] })).toEqual([]);
    expect(
      problems({ ...base, groups: [{ group: 'C', role: 'contractor', scope: [{ line: 'L2' }], until: '2027-01-01', ranges: ['10.2.0.0/33'] }] })[0],
    ).toMatch(/^groups.0.ranges.0: must be an IPv4 address or CIDR range/);
    expect(problems({ ...base, groups: [{ group: 'C', role: 'contractor', scope: [{ line: 'L2' }], until: '31.03.2027' }] })[0]).toMatch(/^groups.0.until/);
  });
});

describe('directory users on the gateway', () => {
  it('gives a name another account held to the new account, keeping the old one under name#guid with no verifier', async () => {
    const { tempDir } = await import('../helpers/daemon.js');
    const { Store } = await import('../../agent/store/database.js');
    const { SessionRepository } = await import('../../agent/store/sessionRepository.js');
    const pino = (await import('pino')).default;
    const tmp = tempDir();
    const { store } = Store.open(
      { path: `${tmp.dir}/a.db`, busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    );
    try {
      const repo = new SessionRepository(store);
      const old = store.durable(() => repo.upsertUser({ guid: 'a'.repeat(32), dn: 'CN=J Smith,DC=x', name: 'jsmith' }, now));
      store.durable(() => repo.setVerifier(old.id, 'scrypt$1$1$1$x$y', now));
      const hire = store.durable(() => repo.upsertUser({ guid: 'b'.repeat(32), dn: 'CN=Jane Smith,DC=x', name: 'JSmith' }, now));
      expect(hire).toMatchObject({ name: 'JSmith', guid: 'b'.repeat(32) });
      expect(repo.user(old.id)).toMatchObject({ name: 'jsmith#aaaaaaaa' });
      expect(repo.user(old.id)?.verifier).toBeUndefined();
      expect(repo.userByName('jsmith')?.guid).toBe('b'.repeat(32));
    } finally {
      store.close();
      tmp.cleanup();
    }
  });
});
