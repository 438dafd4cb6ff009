import type { LdapEntry } from '../transport/ldap.js';
import type { DirectoryAccount, LoginRefusal } from './types.js';

/** The attributes read of a user entry, at login and at a recheck. */
export const ACCOUNT_ATTRIBUTES = [
  'objectGUID',
  'sAMAccountName',
  'uid',
  'cn',
  'userPrincipalName',
  'displayName',
  'userAccountControl',
  'msDS-User-Account-Control-Computed',
  'lockoutTime',
  'accountExpires',
] as const;

const UF_ACCOUNTDISABLE = 0x2;
const UF_LOCKOUT = 0x10;
const UF_PASSWORD_EXPIRED = 0x80_0000;
/** FILETIME of the Unix epoch: 100-ns ticks from 1601-01-01 to 1970-01-01. */
const EPOCH_TICKS = 116_444_736_000_000_000n;
/** accountExpires of an account that never expires (besides 0). */
const NEVER = 9_223_372_036_854_775_807n;

const first = (entry: LdapEntry, name: string): string | undefined => entry.attributes[name.toLowerCase()]?.[0];
const flags = (entry: LdapEntry, name: string): number | undefined => {
  const value = first(entry, name);
  return value === undefined || !/^-?\d+$/.test(value) ? undefined : Number(value) >>> 0;
};

/** accountExpires (FILETIME: 100-ns ticks since 1601, 0 and 2^63-1 for never) as a date, or undefined for never. */
export function expiryOf(value: string | undefined): Date | undefined {
  if (value === undefined || !/^\d+$/.test(value)) return undefined;
  const ticks = BigInt(value);
  if (ticks === 0n || ticks >= NEVER) return undefined;
  return new Date(Number((ticks - EPOCH_TICKS) / 10_000n));
}

/** A user entry as the agent's account; `groups` starts empty. */
export function accountOf(entry: LdapEntry, loginAttribute: string, fallbackName: string): DirectoryAccount {
  const uac = flags(entry, 'userAccountControl') ?? 0;
  const computed = flags(entry, 'msDS-User-Account-Control-Computed');
  const lockoutTime = first(entry, 'lockoutTime');
  // The computed bit knows when a lockout has run out; lockoutTime stays set until the next logon, so it is only the fallback.
  const locked = computed !== undefined ? (computed & UF_LOCKOUT) !== 0 : lockoutTime !== undefined && /^\d+$/.test(lockoutTime) && BigInt(lockoutTime) > 0n;
  const upn = first(entry, 'userPrincipalName');
  const displayName = first(entry, 'displayName');
  const expiresAt = expiryOf(first(entry, 'accountExpires'));
  return {
    guid: first(entry, 'objectGUID') ?? '',
    dn: entry.dn,
    name: first(entry, loginAttribute) ?? fallbackName,
    ...(upn === undefined ? {} : { upn }),
    ...(displayName === undefined ? {} : { displayName }),
    disabled: (uac & UF_ACCOUNTDISABLE) !== 0,
    locked,
    ...(expiresAt === undefined ? {} : { expiresAt }),
    groups: [],
  };
}

/** Whether the password of this entry has expired (the computed flag; a bind usually says so first, with 532 or 773). */
export const passwordExpired = (entry: LdapEntry): boolean => ((flags(entry, 'msDS-User-Account-Control-Computed') ?? 0) & UF_PASSWORD_EXPIRED) !== 0;

/** Why this account may not log in now, whatever a bind said: a disabled, locked or expired account is refused even if the bind succeeded. */
export function stateRefusal(account: DirectoryAccount, entry: LdapEntry, now: Date): LoginRefusal | undefined {
  if (account.disabled) return 'disabled';
  if (account.locked) return 'locked';
  if (account.expiresAt !== undefined && account.expiresAt.getTime() <= now.getTime()) return 'expired';
  if (passwordExpired(entry)) return 'password-expired';
  return undefined;
}
