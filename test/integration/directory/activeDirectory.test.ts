import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ActiveDirectory, type ActiveDirectorySettings } from '../../../agent/directory/activeDirectory.js';
import { DirectoryError } from '../../../agent/errors.js';
import { blackhole, noStartTls, type Stub, wrongNameTls } from '../../helpers/ldapStubs.js';
import { type SambaDc, sambaSkipReason, startSambaDc } from '../../helpers/samba.js';
import { testCa } from '../../helpers/testCa.js';

const PASSWORD = 'Tech-Pass1!';

/** The DirectoryError a promise rejects with (a test fails when it resolves or rejects with anything else). */
async function failure(promise: Promise<unknown>): Promise<DirectoryError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a DirectoryError').toBeInstanceOf(DirectoryError);
  return err as DirectoryError;
}

if (sambaSkipReason) console.warn(`skipping the Active Directory tests: ${sambaSkipReason}`);

describe.skipIf(sambaSkipReason)('ActiveDirectory against a Samba AD DC', () => {
  let dc: SambaDc;
  let scratch: string;
  const log = pino({ level: 'silent' });
  let settings: ActiveDirectorySettings;
  const directory = (over: Partial<ActiveDirectorySettings> = {}) => new ActiveDirectory({ log, settings: { ...settings, ...over } });

  beforeAll(async () => {
    dc = await startSambaDc({ address: '127.0.60.1' });
    scratch = mkdtempSync(join(tmpdir(), 'ad-test-'));
    settings = {
      url: dc.url,
      caFile: dc.caFile,
      baseDn: dc.baseDn,
      loginAttribute: 'sAMAccountName',
      bindDn: dc.serviceDn,
      bindPasswordFile: dc.servicePasswordFile,
      upnSuffix: '',
      connectTimeoutMs: 5_000,
      timeoutMs: 5_000,
    };
    await dc.addUser('tech1', PASSWORD, { upn: 'anna.berg@plant.test', displayName: 'Anna Berg' });
    await dc.addUser('jörg', PASSWORD, { displayName: 'Jörg Åström' });
    for (const name of ['nested1', 'leaver1', 'gone1', 'off1', 'exp1', 'recheck1', 'lock1']) await dc.addUser(name, PASSWORD);
    await dc.addGroup('Line-Techs');
    await dc.addGroup('Maintenance');
    await dc.addGroup('Leads');
    await dc.addMembers('Line-Techs', ['nested1', 'leaver1', 'recheck1']);
    await dc.addMembers('Maintenance', ['Line-Techs']);
    await dc.addMembers('Leads', ['leaver1', 'recheck1']);
  }, 180_000);

  afterAll(async () => {
    await dc?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('logs a user in by sAMAccountName, with their GUID, UPN and display name', async () => {
    const account = await directory().login('tech1', PASSWORD);
    expect(account).toMatchObject({ name: 'tech1', upn: 'anna.berg@plant.test', displayName: 'Anna Berg', disabled: false, locked: false });
    expect(account.guid).toBe(await dc.guidOf('tech1'));
    expect(account.dn).toBe('CN=tech1,CN=Users,DC=plant,DC=test');
  });

  it('logs in a user whose name is not ASCII, and finds their nested groups by a DN that is not either', async () => {
    await dc.addGroup('Prüfer');
    await dc.addMembers('Prüfer', ['jörg']);
    await dc.addMembers('Maintenance', ['Prüfer']);
    const account = await directory().login('jörg', PASSWORD);
    expect([account.name, account.displayName]).toEqual(['jörg', 'Jörg Åström']);
    expect(account.groups.map((g) => g.name).sort()).toEqual(['Maintenance', 'Prüfer']);
    const again = await directory().recheck([account.guid], ['Prüfer', 'CN=Maintenance,CN=Users,DC=plant,DC=test']);
    expect(
      again
        .get(account.guid)
        ?.groups.map((g) => g.name)
        .sort(),
    ).toEqual(['Maintenance', 'Prüfer']);
  });

  it('logs a user in by UPN', async () => {
    expect((await directory().login('anna.berg@plant.test', PASSWORD)).name).toBe('tech1');
  });

  it('logs a user in without a service account, searching as the user (UPN suffix from baseDn)', async () => {
    const d = directory({ bindDn: '', bindPasswordFile: '' });
    expect(d.canRecheck).toBe(false);
    expect((await d.login('nested1', PASSWORD)).name).toBe('nested1');
    expect((await failure(d.login('nested1', 'Wrong-Pass1!'))).refusal).toBe('bad-credentials');
  });

  it('refuses a wrong password as bad-credentials', async () => {
    const err = await failure(directory().login('tech1', 'Wrong-Pass1!'));
    expect([err.code, err.refusal]).toEqual(['LOGIN_FAILED', 'bad-credentials']);
  });

  it('refuses an unknown user as no-such-user', async () => {
    const err = await failure(directory().login('nobody-here', PASSWORD));
    expect([err.code, err.refusal]).toEqual(['LOGIN_FAILED', 'no-such-user']);
  });

  it('matches the configured login attribute (uid), and refuses a name two accounts answer to as ambiguous', async () => {
    await dc.addUser('dup1', PASSWORD);
    await dc.addUser('dup2', PASSWORD);
    await dc.setAttribute('dup1', 'uid', 'anna');
    expect(await directory({ loginAttribute: 'uid' }).login('anna', PASSWORD)).toMatchObject({ name: 'anna', dn: 'CN=dup1,CN=Users,DC=plant,DC=test' });
    await dc.setAttribute('dup2', 'uid', 'anna');
    const err = await failure(directory({ loginAttribute: 'uid' }).login('anna', PASSWORD));
    expect([err.code, err.refusal]).toEqual(['LOGIN_FAILED', 'ambiguous']);
  });

  it('refuses an empty or oversized password, and an oversized name, without any directory traffic', async () => {
    const hole = await blackhole();
    try {
      const d = directory({ url: `ldaps://127.0.0.1:${hole.port}` });
      for (const [name, password] of [
        ['tech1', ''],
        ['tech1', 'x'.repeat(1_025)],
        ['t'.repeat(257), PASSWORD],
      ] as const) {
        const err = await failure(d.login(name, password));
        expect([err.code, err.refusal]).toEqual(['LOGIN_FAILED', 'bad-credentials']);
      }
      expect(hole.connections()).toBe(0);
    } finally {
      await hole.close();
    }
  });

  it.each(['*', 'admin*', '*)(memberOf=*', 'tech1)(', 'tech1\u0000', '\u0000', 'tech1*', 'tеch1'])(
    'finds no account for the injection %j (never a match, never an LDAP error)',
    async (name) => {
      const err = await failure(directory().login(name, PASSWORD));
      expect([err.code, err.refusal]).toEqual(['LOGIN_FAILED', 'no-such-user']);
    },
  );

  it('reports nested groups: a user in Line-Techs, itself in Maintenance, is in both', async () => {
    const account = await directory().login('nested1', PASSWORD);
    expect(account.groups.map((g) => g.name).sort()).toEqual(['Line-Techs', 'Maintenance']);
    expect(account.groups.find((g) => g.name === 'Maintenance')?.dn).toBe('CN=Maintenance,CN=Users,DC=plant,DC=test');
  });

  it('refuses a disabled account as disabled', async () => {
    await dc.disable('off1');
    const err = await failure(directory().login('off1', PASSWORD));
    expect([err.code, err.refusal]).toEqual(['LOGIN_FAILED', 'disabled']);
  });

  it('refuses an expired account as expired', async () => {
    await dc.expire('exp1');
    const err = await failure(directory().login('exp1', PASSWORD));
    expect([err.code, err.refusal]).toEqual(['LOGIN_FAILED', 'expired']);
  });

  it('refuses a locked-out account as locked, with the right password', async () => {
    await dc.lock('lock1');
    const err = await failure(directory().login('lock1', PASSWORD));
    expect([err.code, err.refusal]).toEqual(['LOGIN_FAILED', 'locked']);
  });

  it('rechecks: a removed group membership, a deleted user and a disabled one show', async () => {
    const d = directory();
    const [leaver, gone, recheck] = [await dc.guidOf('leaver1'), await dc.guidOf('gone1'), await dc.guidOf('recheck1')];
    const groups = ['Maintenance', 'CN=Leads,CN=Users,DC=plant,DC=test', 'No-Such-Group'];
    const before = await d.recheck([leaver, gone, recheck], groups);
    expect(
      before
        .get(leaver)
        ?.groups.map((g) => g.name)
        .sort(),
    ).toEqual(['Leads', 'Maintenance']);
    expect(before.get(gone)?.groups).toEqual([]);

    await dc.removeMembers('Leads', ['leaver1']);
    await dc.remove('gone1');
    await dc.disable('recheck1');
    const after = await d.recheck([leaver, gone, recheck], groups);
    expect(after.get(leaver)?.groups.map((g) => g.name)).toEqual(['Maintenance']);
    expect(after.has(gone)).toBe(false);
    expect(after.get(recheck)).toMatchObject({ disabled: true, name: 'recheck1' });
    expect(
      after
        .get(recheck)
        ?.groups.map((g) => g.name)
        .sort(),
    ).toEqual(['Leads', 'Maintenance']);
  });

  it('rechecks in chunks of 200 GUIDs with 1 + groups searches each, and logs no password', async () => {
    const lines: string[] = [];
    const capture = pino({ level: 'debug' }, { write: (line: string) => lines.push(line) });
    const d = new ActiveDirectory({ log: capture, settings });
    const [leaver, tech] = [await dc.guidOf('leaver1'), await dc.guidOf('tech1')];
    // GUIDs no account has, around two real ones: the first chunk and the second.
    const absent = Array.from({ length: 248 }, (_, i) => `${i.toString(16).padStart(4, '0')}${'ab'.repeat(14)}`);
    const result = await d.recheck([leaver, ...absent, tech], ['Maintenance', 'CN=Leads,CN=Users,DC=plant,DC=test']);
    expect([...result.keys()].sort()).toEqual([leaver, tech].sort());
    expect(result.get(leaver)?.groups.map((g) => g.name)).toEqual(['Maintenance']);
    const summary = lines.map((l) => JSON.parse(l) as { msg: string; searches?: number }).find((l) => l.msg === 'directory recheck');
    // One search resolving the two groups, then per chunk of 200 one of the accounts and one per group.
    expect(summary?.searches).toBe(1 + 2 * (1 + 2));
    await d.login('tech1', PASSWORD);
    await d.login('tech1', 'Wrong-Pass1!').catch(() => undefined);
    const text = lines.join('');
    expect(text).toContain('directory login');
    for (const secret of [PASSWORD, 'Wrong-Pass1!', 'Svc-Edge-Pass1!']) expect(text).not.toContain(secret);
  });

  it('finds the groups of a user whose DN has filter metacharacters (escaped in the in-chain filter)', async () => {
    await dc.addUser('ext(1)', PASSWORD);
    await dc.addMembers('Line-Techs', ['ext(1)']);
    const account = await directory().login('ext(1)', PASSWORD);
    expect(account.dn).toBe('CN=ext(1),CN=Users,DC=plant,DC=test');
    expect(account.groups.map((g) => g.name).sort()).toEqual(['Line-Techs', 'Maintenance']);
  });

  it('refuses a recheck without a service account as a bug of the caller', async () => {
    await expect(directory({ bindDn: '', bindPasswordFile: '' }).recheck([], [])).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it('logs in over ldap:// with StartTLS (port 389)', async () => {
    expect((await directory({ url: `ldap://${dc.address}` }).login('tech1', PASSWORD)).name).toBe('tech1');
  });

  it('refuses to go on when the server refuses StartTLS: DIRECTORY_UNAVAILABLE, and nothing is sent in the clear', async () => {
    const stub = await noStartTls();
    try {
      const err = await failure(directory({ url: `ldap://127.0.0.1:${stub.port}`, bindDn: '', bindPasswordFile: '' }).login('tech1', PASSWORD));
      expect(err.code, err.message).toBe('DIRECTORY_UNAVAILABLE');
      expect(stub.connections()).toBe(1);
      expect(stub.received().length).toBeGreaterThan(0);
      expect(stub.received().includes(Buffer.from(PASSWORD)), 'the password went over plain LDAP').toBe(false);
      expect(stub.received().includes(Buffer.from('tech1')), 'a bind went over plain LDAP').toBe(false);
    } finally {
      await stub.close();
    }
  });

  it('refuses a directory whose certificate another CA signed: DIRECTORY_CERTIFICATE, over LDAPS and StartTLS', async () => {
    const other = await testCa(join(scratch, 'other-ca'), 'Another CA');
    for (const url of [dc.url, `ldap://${dc.address}`]) {
      const err = await failure(directory({ url, caFile: other.caFile }).login('tech1', PASSWORD));
      expect(err.code, `${url}: ${err.message}`).toBe('DIRECTORY_CERTIFICATE');
    }
  });

  it('refuses a certificate of the trusted CA that names another host: DIRECTORY_CERTIFICATE', async () => {
    const { certPath, keyPath } = await dc.ca.issue('other.pem', 'other.key', ['DNS:other.plant.test']);
    const stub: Stub = await wrongNameTls(certPath, keyPath);
    try {
      const err = await failure(directory({ url: `ldaps://127.0.0.1:${stub.port}` }).login('tech1', PASSWORD));
      expect(err.code, err.message).toBe('DIRECTORY_CERTIFICATE');
    } finally {
      await stub.close();
    }
  });

  it.each(['ldaps', 'ldap'])(
    'gives DIRECTORY_UNAVAILABLE for a %s directory that never answers',
    async (scheme) => {
      const hole = await blackhole();
      try {
        const err = await failure(directory({ url: `${scheme}://127.0.0.1:${hole.port}`, connectTimeoutMs: 500, timeoutMs: 500 }).login('tech1', PASSWORD));
        expect(err.code, err.message).toBe('DIRECTORY_UNAVAILABLE');
      } finally {
        await hole.close();
      }
    },
    30_000,
  );

  it('gives DIRECTORY_UNAVAILABLE when nothing listens', async () => {
    const hole = await blackhole();
    const url = `ldaps://127.0.0.1:${hole.port}`;
    await hole.close();
    expect((await failure(directory({ url }).login('tech1', PASSWORD))).code).toBe('DIRECTORY_UNAVAILABLE');
  });
});
