import type { GroupMapping } from '../config/authSchema.js';
import type { DirectoryRole, Grant } from '../store/sessionRepository.js';
import type { DirectoryAccount } from './types.js';

/** Strongest first: a user in groups of several roles gets the first of these they have. */
export const ROLE_STRENGTH: readonly DirectoryRole[] = ['admin', 'technician', 'contractor', 'viewer'];

/** A user's access, as their groups give it now, or why they have none. */
export type Access = { ok: true; role: DirectoryRole; grant: Grant; groups: string[] } | { ok: false; why: string; refusal: string };

/** The end of a YYYY-MM-DD day, UTC: a mapping's `until` is the last day of access. */
const endOfDay = (day: string): Date => new Date(`${day}T23:59:59.999Z`);

const sameGroup = (key: string, group: { dn: string; name: string }) => {
  const k = key.toLowerCase();
  return group.dn.toLowerCase() === k || group.name.toLowerCase() === k;
};

/**
 * What a directory account may do on the gateway: nothing when disabled,
 * locked or expired in the directory, or in no mapped group whose `until`
 * has not passed; else the strongest role of its mappings, with the scope of
 * that role's mappings (the union of them; none if one of them has none),
 * contractors' mayDecide and ranges, and an end (`until`): the latest
 * `until` of those mappings, never past the account's own expiry. A
 * contractor must have an end: without one, no access.
 */
export function accessOf(account: DirectoryAccount, mappings: readonly GroupMapping[], now: Date): Access {
  if (account.disabled) return { ok: false, why: 'the account is disabled in the directory', refusal: 'disabled' };
  if (account.locked) return { ok: false, why: 'the account is locked out in the directory', refusal: 'locked' };
  if (account.expiresAt && account.expiresAt <= now)
    return { ok: false, why: `the account expired in the directory on ${account.expiresAt.toISOString()}`, refusal: 'expired' };
  const matching = mappings.filter((m) => account.groups.some((g) => sameGroup(m.group, g)));
  if (matching.length === 0) {
    const groups = account.groups.map((g) => g.name).join(', ') || 'none';
    return { ok: false, why: `in no group auth.directory.groups maps to a role (groups: ${groups})`, refusal: 'no-group' };
  }
  const current = matching.filter((m) => !m.until || endOfDay(m.until) > now);
  if (current.length === 0) {
    const last = matching.map((m) => m.until!).sort()[matching.length - 1];
    return { ok: false, why: `the mapping of ${matching.map((m) => m.group).join(', ')} ended on ${last}`, refusal: 'mapping-ended' };
  }
  const role = ROLE_STRENGTH.find((r) => current.some((m) => m.role === r))!;
  const of = current.filter((m) => m.role === role);
  const grant: Grant = {};
  if (of.every((m) => m.scope)) grant.scope = dedupe(of.flatMap((m) => m.scope!));
  if (role === 'contractor' && of.some((m) => m.mayDecide)) grant.mayDecide = true;
  const ranges = dedupe(of.flatMap((m) => m.ranges ?? []));
  if (ranges.length > 0) grant.ranges = ranges;
  const ends = of.map((m) => (m.until ? endOfDay(m.until) : undefined));
  let until = ends.some((e) => e === undefined) ? undefined : new Date(Math.max(...ends.map((e) => e!.getTime())));
  if (account.expiresAt && (!until || account.expiresAt < until)) until = account.expiresAt;
  if (role === 'contractor' && !until)
    return {
      ok: false,
      why: 'a contractor needs an end date: give the mapping an until, or the account an expiry in the directory',
      refusal: 'no-end-date',
    };
  if (until) grant.until = until.toISOString();
  return { ok: true, role, grant, groups: of.map((m) => m.group) };
}

function dedupe<T>(items: T[]): T[] {
  const seen = new Set<string>();
  return items.filter((i) => {
    const key = JSON.stringify(i);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Whether two grants give the same (the recheck records and audits a change). */
export const sameAccess = (a: { role: DirectoryRole; grant: Grant }, b: { role: DirectoryRole; grant: Grant }): boolean =>
  a.role === b.role && JSON.stringify(a.grant) === JSON.stringify(b.grant);
