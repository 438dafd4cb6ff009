import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { DirectoryConfig } from '../config/authSchema.js';
import { ConfigFileError, DirectoryError, type DirectoryRefusal, InternalError } from '../errors.js';
import { escapeFilterValue, guidFilter, LdapConnection, type LdapEntry, type LdapOptions } from '../transport/ldap.js';
import { ACCOUNT_ATTRIBUTES, accountOf, stateRefusal } from './accountEntry.js';
import type { Directory, DirectoryAccount, LoginRefusal } from './types.js';

// The transport's refusal union and the directory's must stay the same set.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : never) : never;
const sameRefusals: Same<DirectoryRefusal, LoginRefusal> = true;
void sameRefusals;

export type ActiveDirectorySettings = Pick<
  DirectoryConfig,
  'url' | 'caFile' | 'baseDn' | 'loginAttribute' | 'bindDn' | 'bindPasswordFile' | 'upnSuffix' | 'connectTimeoutMs' | 'timeoutMs'
>;

/** Longest name and password a login may give: longer ones are refused before any traffic. */
export const MAX_NAME = 256;
export const MAX_PASSWORD = 1_024;
/** GUIDs per recheck search: keeps each filter well under AD's request size limits (MaxReceiveBuffer). */
export const RECHECK_CHUNK = 200;
const IN_CHAIN = '1.2.840.113556.1.4.1941';
const GROUP_ATTRIBUTES = ['distinguishedName', 'sAMAccountName'];

const refused = (refusal: LoginRefusal, message: string) => new DirectoryError('LOGIN_FAILED', message, { refusal });
const ms = (since: bigint) => Number((process.hrtime.bigint() - since) / 1_000_000n);

/**
 * The Directory of an Active Directory (docs/directory.md). Stores its
 * settings only; the CA file and the bind password are read at each call,
 * so that a renewed CA or a changed password takes effect without a restart.
 */
export class ActiveDirectory implements Directory {
  private readonly log: Logger;
  private readonly settings: ActiveDirectorySettings;
  private readonly env: NodeJS.ProcessEnv;
  private readonly now: () => Date;

  constructor(deps: { log: Logger; settings: ActiveDirectorySettings; env?: NodeJS.ProcessEnv; now?: () => Date }) {
    this.log = deps.log.child({ module: 'directory' });
    this.settings = deps.settings;
    this.env = deps.env ?? process.env;
    this.now = deps.now ?? (() => new Date());
  }

  get canRecheck(): boolean {
    return this.settings.bindDn !== '';
  }

  /** Reads the CA file and the service password as a call would: CONFIG_FILE_UNUSABLE with the reason, for a check at start. */
  checkFiles(): void {
    this.ldapOptions();
    if (this.canRecheck) this.bindPassword();
  }

  async login(name: string, password: string): Promise<DirectoryAccount> {
    // Checked before any traffic: an empty password would be an unauthenticated bind, which AD accepts.
    if (password === '' || password.length > MAX_PASSWORD || name === '' || name.length > MAX_NAME)
      throw refused('bad-credentials', 'a login needs a name of at most 256 and a password of 1 to 1024 characters');
    // No account name holds a control character, and Samba cuts an assertion value at an (escaped) NUL: "tech1\0" would find tech1.
    if (/[\u0000-\u001f\u007f]/.test(name)) throw refused('no-such-user', 'no directory account has that name');
    const started = process.hrtime.bigint();
    // Configuration files first: a missing one is reported as such, before any traffic.
    const options = this.ldapOptions();
    const servicePassword = this.canRecheck ? this.bindPassword() : undefined;
    const search = await this.connect(options);
    try {
      if (servicePassword !== undefined) await this.bindService(search, servicePassword);
      else await search.bind(name.includes('@') ? name : `${name}@${this.upnSuffix()}`, password);
      const value = escapeFilterValue(name);
      const attr = this.settings.loginAttribute;
      const filter = `(&(objectCategory=person)(objectClass=user)(|(${attr}=${value})(userPrincipalName=${value})))`;
      const entries = await search.search(this.settings.baseDn, filter, ACCOUNT_ATTRIBUTES, { sizeLimit: 2 });
      if (entries.length === 0) throw refused('no-such-user', 'no directory account has that name');
      if (entries.length > 1) throw refused('ambiguous', 'more than one directory account has that name');
      const entry = entries[0] as LdapEntry;
      // The password check proper: a bind as the account found, on a connection of its own.
      const check = await this.connect(options);
      try {
        await check.bind(entry.dn, password);
      } finally {
        await check.close();
      }
      const account = accountOf(entry, attr, name);
      const refusal = stateRefusal(account, entry, this.now());
      if (refusal) throw refused(refusal, `the directory account is ${refusal}`);
      const groups = await search.search(this.settings.baseDn, `(&(objectClass=group)(member:${IN_CHAIN}:=${escapeFilterValue(entry.dn)}))`, GROUP_ATTRIBUTES);
      account.groups = groups.map((g) => ({ dn: g.dn, name: g.attributes.samaccountname?.[0] ?? g.dn }));
      this.log.debug({ guid: account.guid, groups: account.groups.length, ms: ms(started) }, 'directory login');
      return account;
    } catch (err) {
      this.log.debug({ code: (err as DirectoryError).code, refusal: (err as DirectoryError).refusal, ms: ms(started) }, 'directory login failed');
      throw err;
    } finally {
      await search.close();
    }
  }

  async recheck(guids: readonly string[], groups: readonly string[]): Promise<Map<string, DirectoryAccount>> {
    if (!this.canRecheck) throw new InternalError('a directory recheck needs the service account (auth.directory.bindDn): check canRecheck first');
    const started = process.hrtime.bigint();
    const result = new Map<string, DirectoryAccount>();
    const wanted = [...new Set(guids.map((g) => g.toLowerCase()))].filter((g) => guidFilter(g) !== undefined);
    if (wanted.length === 0) return result;
    const options = this.ldapOptions();
    const servicePassword = this.bindPassword();
    const connection = await this.connect(options);
    let searches = 0;
    try {
      await this.bindService(connection, servicePassword);
      const resolved = groups.length === 0 ? [] : await this.resolveGroups(connection, groups);
      if (groups.length > 0) searches++;
      for (let at = 0; at < wanted.length; at += RECHECK_CHUNK) {
        const chunk = wanted.slice(at, at + RECHECK_CHUNK);
        const anyOf = `(|${chunk.map((g) => guidFilter(g)).join('')})`;
        for (const entry of await connection.search(this.settings.baseDn, anyOf, ACCOUNT_ATTRIBUTES, { sizeLimit: chunk.length })) {
          const account = accountOf(entry, this.settings.loginAttribute, entry.dn);
          if (account.guid !== '') result.set(account.guid, account);
        }
        searches++;
        for (const group of resolved) {
          const filter = `(&(objectClass=user)(memberOf:${IN_CHAIN}:=${escapeFilterValue(group.dn)})${anyOf})`;
          for (const member of await connection.search(this.settings.baseDn, filter, ['objectGUID'], { sizeLimit: chunk.length }))
            result.get(member.attributes.objectguid?.[0] ?? '')?.groups.push({ ...group });
          searches++;
        }
      }
      this.log.debug({ accounts: wanted.length, found: result.size, groups: resolved.length, searches, ms: ms(started) }, 'directory recheck');
      return result;
    } finally {
      await connection.close();
    }
  }

  /**
   * The DN and name of each mapped group, in one search: a key holding "="
   * is a DN and is used as it is (named by its first RDN should the search
   * not find it); a name is looked up by sAMAccountName and left out when
   * no group has it.
   */
  private async resolveGroups(connection: LdapConnection, keys: readonly string[]): Promise<{ dn: string; name: string }[]> {
    const dns = keys.filter((k) => k.includes('='));
    const names = keys.filter((k) => !k.includes('='));
    const terms = [...names.map((n) => `(sAMAccountName=${escapeFilterValue(n)})`), ...dns.map((d) => `(distinguishedName=${escapeFilterValue(d)})`)];
    const found = await connection.search(this.settings.baseDn, `(&(objectClass=group)(|${terms.join('')}))`, GROUP_ATTRIBUTES, {
      sizeLimit: keys.length * 2,
    });
    const byDn = new Map(found.map((g) => [g.dn.toLowerCase(), g.attributes.samaccountname?.[0] ?? g.dn]));
    const out = new Map<string, { dn: string; name: string }>();
    for (const dn of dns) out.set(dn.toLowerCase(), { dn, name: byDn.get(dn.toLowerCase()) ?? dn.replace(/^[^=]*=((?:\\.|[^,])*).*$/, '$1') });
    for (const name of names) {
      const group = found.find((g) => g.attributes.samaccountname?.[0]?.toLowerCase() === name.toLowerCase());
      if (group) out.set(group.dn.toLowerCase(), { dn: group.dn, name: group.attributes.samaccountname?.[0] ?? name });
      else this.log.debug({ group: name }, 'mapped directory group not found');
    }
    return [...out.values()];
  }

  private async connect(options: LdapOptions): Promise<LdapConnection> {
    const started = process.hrtime.bigint();
    const connection = await LdapConnection.open(this.settings.url, options);
    this.log.debug({ url: this.settings.url, ms: ms(started) }, 'directory connected');
    return connection;
  }

  /** A refused service account is the gateway's configuration, not the user's credentials: DIRECTORY_UNAVAILABLE, never LOGIN_FAILED. */
  private async bindService(connection: LdapConnection, password: string): Promise<void> {
    try {
      await connection.bind(this.settings.bindDn, password);
    } catch (err) {
      if (err instanceof DirectoryError && err.code === 'LOGIN_FAILED')
        throw new DirectoryError('DIRECTORY_UNAVAILABLE', `the directory refused the service account ${this.settings.bindDn} (${err.refusal})`, {
          cause: err,
        });
      throw err;
    }
  }

  /** The CA PEM, read at each call: CONFIG_FILE_UNUSABLE when it cannot be read or holds no certificate. */
  private ldapOptions(): LdapOptions {
    const file = this.settings.caFile;
    let caPem: string;
    try {
      caPem = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigFileError(`cannot read auth.directory.caFile ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
    if (!caPem.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigFileError(`auth.directory.caFile ${file} holds no PEM certificate`);
    return { caPem, connectTimeoutMs: this.settings.connectTimeoutMs, timeoutMs: this.settings.timeoutMs };
  }

  /**
   * The service account password: the first line of bindPasswordFile, else
   * the systemd credential `directory-bind-password` ($CREDENTIALS_DIRECTORY,
   * LoadCredential=). Never logged.
   */
  private bindPassword(): string {
    const fromFile = (path: string, what: string) => {
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch (err) {
        throw new ConfigFileError(`cannot read the directory bind password from ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      const line = text.split(/\r?\n/)[0] ?? '';
      if (line === '') throw new ConfigFileError(`${what} ${path} is empty`);
      return line;
    };
    if (this.settings.bindPasswordFile !== '') return fromFile(this.settings.bindPasswordFile, 'auth.directory.bindPasswordFile');
    const credentials = this.env.CREDENTIALS_DIRECTORY;
    const credential = credentials ? join(credentials, 'directory-bind-password') : undefined;
    if (credential && existsSync(credential)) return fromFile(credential, 'systemd credential');
    throw new ConfigFileError('auth.directory.bindDn is set but neither bindPasswordFile nor the credential directory-bind-password holds its password');
  }

  /** upnSuffix, else the DC= parts of baseDn joined with dots (DC=plant,DC=example: plant.example). */
  private upnSuffix(): string {
    if (this.settings.upnSuffix !== '') return this.settings.upnSuffix;
    return this.settings.baseDn
      .split(',')
      .map((part) => part.trim())
      .filter((part) => /^dc=/i.test(part))
      .map((part) => part.slice(3))
      .join('.');
  }
}
