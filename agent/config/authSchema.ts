import { isIPv4 } from 'node:net';
import { z } from 'zod';

/** An IPv4 address or CIDR range (a contractor's discovery ranges), as transport/ranges.ts reads them. */
const isRange = (v: string): boolean => {
  const [ip, bits, ...rest] = v.split('/');
  return rest.length === 0 && isIPv4(ip ?? '') && (bits === undefined || (/^\d{1,2}$/.test(bits) && Number(bits) <= 32));
};

/**
 * auth: who may use the gateway besides its local users. `auth.directory`
 * lets the plant's Active Directory users log in (docs/directory.md): their
 * role and scope come from the groups they are in, looked at again every
 * `recheckIntervalSeconds` while they hold a session.
 */
const int = (min: number, max: number, what: string) => z.number().int().min(min).max(max).describe(`${what} (whole number, ${min} to ${max})`);

/** A location field of a scope: the same text a technician sets on a device (site, area, line). */
const placeName = z
  .string()
  .min(1)
  .max(128)
  .refine((v) => v.trim() === v && !/[\u0000-\u001f\u007f]/.test(v), 'must not start or end with spaces or hold control characters');

/** One part of the plant: a device is inside when every field given equals the device's (its own location, else the gateway's sync.location). */
export const scopePart = z
  .strictObject({ site: placeName.optional(), area: placeName.optional(), line: placeName.optional() })
  .refine((p) => p.site !== undefined || p.area !== undefined || p.line !== undefined, 'give site, area, line or several')
  .describe('a part of the plant: site, area and/or line, as set on devices');

export type ScopePart = z.infer<typeof scopePart>;

/** An LDAP distinguished name or a group's sAMAccountName, as a plant engineer writes it. */
const groupName = z
  .string()
  .min(1)
  .max(1_024)
  .refine((v) => !/[\u0000-\u001f\u007f]/.test(v), 'must not hold control characters');

export const groupMapping = z
  .strictObject({
    group: groupName.describe('the AD group: its name (sAMAccountName, such as Maintenance-Leads) or its distinguished name; members of nested groups count'),
    role: z.enum(['admin', 'technician', 'contractor', 'viewer']).describe('the role its members get: admin, technician, contractor or viewer'),
    scope: z
      .array(scopePart)
      .min(1)
      .max(64)
      .optional()
      .describe('the parts of the plant its members see and act on (none: the whole plant; a contractor needs one)'),
    until: z.iso.date().optional().describe('last day (UTC, YYYY-MM-DD) its members have access; a contractor needs it unless their AD account has an expiry'),
    mayDecide: z.boolean().optional().describe('contractors: may approve and reject devices inside their scope (default false)'),
    ranges: z
      .array(z.string().min(1).max(64).refine(isRange, 'must be an IPv4 address or CIDR range, such as 10.2.0.0/24'))
      .max(64)
      .optional()
      .describe('contractors and scoped technicians: the IPv4 ranges (inside opcua.scan.ranges) their OPC UA discovery runs may cover'),
  })
  .superRefine((m, ctx) => {
    if (m.role === 'contractor' && !m.scope) ctx.addIssue({ code: 'custom', path: ['scope'], message: 'a contractor mapping needs a scope' });
    if (m.role === 'admin' && m.scope)
      ctx.addIssue({ code: 'custom', path: ['scope'], message: 'an administrator manages the whole gateway: give admin no scope' });
    if (m.mayDecide !== undefined && m.role !== 'contractor')
      ctx.addIssue({ code: 'custom', path: ['mayDecide'], message: 'only a contractor mapping takes mayDecide (technicians decide)' });
  });

export type GroupMapping = z.infer<typeof groupMapping>;

const ldapUrl = z.string().refine((v) => {
  if (v === '') return true;
  try {
    const u = new URL(v);
    return (u.protocol === 'ldaps:' || u.protocol === 'ldap:') && u.hostname !== '' && (u.pathname === '' || u.pathname === '/') && !u.search;
  } catch {
    return false;
  }
}, 'must be ldaps://host[:port] or ldap://host[:port] (StartTLS), without a path');

export const directorySchema = z
  .strictObject({
    enabled: z.boolean().describe('let Active Directory users log in (POST /api/v1/session, edge-agent login)'),
    url: ldapUrl.describe('the domain controller: ldaps://dc1.plant.example (636) or ldap://dc1.plant.example (389, StartTLS before anything else)'),
    caFile: z.string().describe("PEM file of the CA the directory's certificate chains to; the certificate and its name are always checked"),
    baseDn: z.string().max(1_024).describe('where users and groups are searched, such as DC=plant,DC=example'),
    loginAttribute: z
      .enum(['sAMAccountName', 'uid', 'cn'])
      .describe('the attribute a login name is matched against (a UPN such as anna@plant.example works too)'),
    bindDn: z.string().max(1_024).describe('service account that searches (DN or UPN); empty: each user searches as themselves and sessions last 15 minutes'),
    bindPasswordFile: z
      .string()
      .describe('file holding the service account password (first line); empty: the systemd credential directory-bind-password (LoadCredential=)'),
    upnSuffix: z
      .string()
      .max(253)
      .describe(
        'without a service account: the suffix a plain login name is bound with (name@suffix); empty: from baseDn (DC=plant,DC=example: plant.example)',
      ),
    connectTimeoutMs: int(100, 60_000, 'time to connect to the directory, TLS included, in milliseconds'),
    timeoutMs: int(100, 60_000, 'time one directory operation may take, in milliseconds'),
    sessionHours: int(1, 24, 'how long a directory session lasts at most (less for a contractor whose end date comes first)'),
    recheckIntervalSeconds: int(
      2,
      3_600,
      'how often the groups and account state of users holding a session are looked at again; ' +
        'a leaver or a changed role takes effect within this plus timeoutMs',
    ),
    groups: z.array(groupMapping).max(256).describe('group → role mappings; a user in several gets the strongest role (admin, technician, contractor, viewer)'),
    offline: z.strictObject({
      keepSessionsMinutes: int(
        0,
        1_440,
        'while the directory cannot be reached: how long after their last check live sessions go on (0: they end at the first failed check)',
      ),
      cachedLogins: z
        .boolean()
        .describe('while the directory cannot be reached, let a user who logged in recently log in again against a salted scrypt verifier (off by default)'),
      cachedLoginMaxAgeHours: int(1, 720, 'how old the last online login of a user may be for a cached login, in hours'),
    }),
  })
  .superRefine((d, ctx) => {
    if (!d.enabled) return;
    for (const key of ['url', 'caFile', 'baseDn'] as const)
      if (d[key] === '') ctx.addIssue({ code: 'custom', path: [key], message: `auth.directory.enabled needs auth.directory.${key}` });
    if (d.groups.length === 0)
      ctx.addIssue({ code: 'custom', path: ['groups'], message: 'map at least one group to a role: a directory user in no mapped group has no access' });
  });

export const authSchema = z.strictObject({ directory: directorySchema });

export type DirectoryConfig = z.infer<typeof directorySchema>;

export function defaultAuthConfig(): z.infer<typeof authSchema> {
  return {
    directory: {
      enabled: false,
      url: '',
      caFile: '',
      baseDn: '',
      loginAttribute: 'sAMAccountName',
      bindDn: '',
      bindPasswordFile: '',
      upnSuffix: '',
      connectTimeoutMs: 5_000,
      timeoutMs: 5_000,
      sessionHours: 8,
      recheckIntervalSeconds: 30,
      groups: [],
      offline: { keepSessionsMinutes: 60, cachedLogins: false, cachedLoginMaxAgeHours: 24 },
    },
  };
}
