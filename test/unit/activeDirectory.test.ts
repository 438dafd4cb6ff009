import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accountOf, expiryOf } from '../../agent/directory/accountEntry.js';
import { ActiveDirectory, type ActiveDirectorySettings } from '../../agent/directory/activeDirectory.js';
import { blackhole, type Stub } from '../helpers/ldapStubs.js';
import { testCa } from '../helpers/testCa.js';

describe('accountExpires (FILETIME)', () => {
  it.each([
    ['0 is never', '0', undefined],
    ['2^63-1 is never', '9223372036854775807', undefined],
    ['the Unix epoch', '116444736000000000', '1970-01-01T00:00:00.000Z'],
    ['a day in 2030', String(BigInt(Date.parse('2030-06-01T12:00:00Z')) * 10_000n + 116444736000000000n), '2030-06-01T12:00:00.000Z'],
    ['no value', undefined, undefined],
    ['not a number', 'soon', undefined],
  ])('%s', (_what, value, iso) => {
    expect(expiryOf(value)?.toISOString()).toBe(iso);
  });
});

describe('account state', () => {
  const entry = (attributes: Record<string, string[]>) => ({ dn: 'CN=a,DC=x', attributes: { objectguid: ['00'.repeat(16)], ...attributes } });
  it('reads disabled from userAccountControl bit 0x2 and locked from the computed bit 0x10 before lockoutTime', () => {
    expect(accountOf(entry({ useraccountcontrol: ['514'] }), 'sAMAccountName', 'a')).toMatchObject({ disabled: true, locked: false });
    expect(accountOf(entry({ 'msds-user-account-control-computed': ['16'] }), 'sAMAccountName', 'a').locked).toBe(true);
    // A lockout that ran out: lockoutTime stays until the next logon, the computed bit is clear.
    expect(accountOf(entry({ 'msds-user-account-control-computed': ['0'], lockouttime: ['133000000000000000'] }), 'sAMAccountName', 'a').locked).toBe(false);
    expect(accountOf(entry({ lockouttime: ['133000000000000000'] }), 'sAMAccountName', 'a').locked).toBe(true);
  });
});

describe('ActiveDirectory configuration files', () => {
  let dir: string;
  let hole: Stub;
  let settings: ActiveDirectorySettings;
  const log = pino({ level: 'silent' });
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ad-unit-'));
    hole = await blackhole();
    const ca = await testCa(join(dir, 'ca'), 'Unit CA');
    settings = {
      url: `ldaps://127.0.0.1:${hole.port}`,
      caFile: ca.caFile,
      baseDn: 'DC=plant,DC=test',
      loginAttribute: 'sAMAccountName',
      bindDn: 'CN=svc,DC=plant,DC=test',
      bindPasswordFile: '',
      upnSuffix: '',
      connectTimeoutMs: 200,
      timeoutMs: 200,
    };
  });
  afterAll(async () => {
    await hole.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const login = (over: Partial<ActiveDirectorySettings>, env: NodeJS.ProcessEnv = {}) =>
    new ActiveDirectory({ log, settings: { ...settings, ...over }, env }).login('tech1', 'Tech-Pass1!');

  it('refuses a missing or empty CA file as CONFIG_FILE_UNUSABLE', async () => {
    await expect(login({ caFile: join(dir, 'none.pem') })).rejects.toMatchObject({ code: 'CONFIG_FILE_UNUSABLE' });
    writeFileSync(join(dir, 'empty.pem'), 'no certificate here\n');
    await expect(login({ caFile: join(dir, 'empty.pem') })).rejects.toMatchObject({ code: 'CONFIG_FILE_UNUSABLE' });
  });

  it('needs the service password from bindPasswordFile or the systemd credential directory-bind-password', async () => {
    await expect(login({})).rejects.toMatchObject({ code: 'CONFIG_FILE_UNUSABLE' });
    await expect(login({ bindPasswordFile: join(dir, 'missing') })).rejects.toMatchObject({ code: 'CONFIG_FILE_UNUSABLE' });
    writeFileSync(join(dir, 'empty'), '\n');
    await expect(login({ bindPasswordFile: join(dir, 'empty') })).rejects.toMatchObject({ code: 'CONFIG_FILE_UNUSABLE' });
    // Read: the contact goes on to the (silent) directory.
    writeFileSync(join(dir, 'directory-bind-password'), 'Svc-Pass1!\n');
    await expect(login({}, { CREDENTIALS_DIRECTORY: dir })).rejects.toMatchObject({ code: 'DIRECTORY_UNAVAILABLE' });
    await expect(login({ bindPasswordFile: join(dir, 'directory-bind-password') })).rejects.toMatchObject({ code: 'DIRECTORY_UNAVAILABLE' });
  });
});
