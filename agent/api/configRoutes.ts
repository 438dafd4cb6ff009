import { z } from 'zod';
import type { Config } from '../config/schema.js';
import type { ConfigService } from '../configuration/configService.js';
import { ProfileInvalidError, PROFILE_NAME, RESERVED_KEYS, validateProfile } from '../configuration/profileDocument.js';
import { ProfileChangeError, ProfileManager } from '../configuration/profileManager.js';
import { diffProfiles } from '../configuration/resolve.js';
import type { Repositories } from '../store/repositories.js';
import { inScope, type Principal } from './principal.js';
import { ApiError, type QuerySpec, type Route } from './router.js';

export interface ConfigRouteDeps {
  config: () => Config;
  repos: Pick<Repositories, 'devices' | 'configs'>;
  /** The configuration service (absent when configuration.enabled is false: changes are refused, reads still answer). */
  configuration?: ConfigService;
}

const VERSION: QuerySpec[string] = { kind: 'int', min: 0, max: 1_000_000_000, default: 0 };
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;

const rollbackBody = z.strictObject({ version: z.number().int().min(1) });
const assignBody = z.strictObject({ profile: z.string().regex(PROFILE_NAME, 'a profile name').nullable() });
const labelsBody = z.strictObject({
  // JSON.parse keeps a "__proto__" key as an own property, which the record below would drop without a word: refused first.
  labels: z
    .unknown()
    .superRefine((raw, ctx) => {
      const reserved = raw && typeof raw === 'object' ? Object.keys(raw).filter((k) => RESERVED_KEYS.includes(k)) : [];
      for (const key of reserved) ctx.addIssue({ code: 'custom', path: [key], message: `a reserved name: ${RESERVED_KEYS.join(', ')} cannot be label keys` });
    })
    .pipe(
      z
        .record(
          z.string().regex(LABEL_KEY, 'a label key: letters, digits, . _ / - (up to 63, starting with a letter or digit)'),
          z
            .string()
            .min(1)
            .max(128)
            .refine((v) => !/[\u0000-\u001f\u007f]/.test(v) && v.trim() === v, 'printable, without leading or trailing spaces'),
        )
        .refine((l) => Object.keys(l).length <= 64, 'at most 64 labels'),
    ),
});

/** A change the configuration module refused, as the API answers it. */
function answered<T>(change: () => T): T {
  try {
    return change();
  } catch (err) {
    if (err instanceof ProfileChangeError) throw new ApiError(err.code, err.message);
    if (err instanceof ProfileInvalidError) throw new ApiError('PROFILE_INVALID', err.message);
    throw err;
  }
}

/** Configuration profiles (docs/device-configuration.md): list, show, apply (with a dry run), diff, rollback; a device's profile and labels. */
export function configRoutes(deps: ConfigRouteDeps): Route[] {
  // deps.repos is read at request time: the routes are also listed without a store (docs/api.md's test).
  const manager = () => {
    if (!deps.configuration) throw new ApiError('CONFIGURATION_OFF', 'device configuration is off (configuration.enabled: false)');
    return new ProfileManager(deps.repos, deps.configuration);
  };
  const gateway = () => deps.config().sync.location;
  const device = (id: string, who: Principal) => {
    const found = deps.repos.devices.get(id);
    if (!found || !inScope(who.scope, found.location, gateway())) throw new ApiError('NO_SUCH_DEVICE', `no device ${id}`);
    return found;
  };
  const version = (name: string, v: number) => {
    const found = v === 0 ? deps.repos.configs.head(name) : deps.repos.configs.version(name, v);
    if (!found) throw new ApiError('NO_SUCH_PROFILE', v === 0 || !deps.repos.configs.head(name) ? `no profile ${name}` : `profile ${name} has no version ${v}`);
    return found;
  };
  return [
    {
      method: 'GET',
      path: '/api/v1/config-profiles',
      permission: 'config.read',
      summary: 'the configuration profiles: protocol, head and latest version, devices by status',
      handle: () => {
        const items = deps.repos.configs.list();
        return { body: { total: items.length, items } };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/config-profiles',
      permission: 'config.manage',
      summary: 'store a profile document (the body) as a new version, now the head (201), or 200 unchanged when the head holds it',
      handle: async (ctx) => {
        const raw = await ctx.body(z.unknown());
        const doc = answered(() => validateProfile(raw));
        const m = manager();
        const result = ctx.commit(() =>
          answered(() => {
            const r = m.apply(doc, ctx.user.name, false);
            if (r.outcome === 'created')
              ctx.audit('config.profile.apply', `profile:${doc.name}`, 'done', {
                version: r.version,
                ...(r.previous ? { previous: r.previous } : {}),
                devices: r.affected.length,
              });
            return r;
          }),
        );
        return { status: result.outcome === 'created' ? 201 : 200, body: result };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/config-profiles/dry-run',
      permission: 'config.manage',
      summary: 'what storing the document (the body) would do: its version, the diff against the head, the devices affected; nothing stored',
      handle: async (ctx) => {
        const raw = await ctx.body(z.unknown());
        const doc = answered(() => validateProfile(raw));
        return { body: answered(() => manager().apply(doc, ctx.user.name, true)) };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/config-profiles/{name}',
      permission: 'config.read',
      summary: 'one profile: the document of its head (or of version=N), its versions, its devices by status',
      query: { version: VERSION },
      handle: ({ params, query }) => {
        const v = version(params.name!, query.int('version'));
        const head = deps.repos.configs.head(params.name!)!;
        const summary = deps.repos.configs.list().find((p) => p.name === params.name);
        return {
          body: {
            name: v.name,
            protocol: v.protocol,
            version: v.version,
            head: head.version,
            sha256: v.sha256,
            createdAt: v.createdAt,
            createdBy: v.createdBy,
            document: v.document,
            versions: deps.repos.configs.versions(v.name),
            devices: summary?.devices ?? {},
          },
        };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/config-profiles/{name}/diff',
      permission: 'config.read',
      summary: 'what differs between two versions (default: the one before the head, and the head)',
      query: { from: VERSION, to: VERSION },
      handle: ({ params, query }) => {
        const to = version(params.name!, query.int('to'));
        const fromN = query.int('from') || to.version - 1;
        const from = fromN >= 1 ? version(params.name!, fromN) : undefined;
        return { body: { name: to.name, from: from?.version ?? null, to: to.version, ...diffProfiles(from?.document, to.document) } };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/config-profiles/{name}/rollback',
      permission: 'config.manage',
      summary: 'move the head to an earlier version (body {version}); the devices follow',
      handle: async (ctx) => {
        const b = await ctx.body(rollbackBody);
        const m = manager();
        const result = ctx.commit(() =>
          answered(() => {
            const r = m.rollback(ctx.params.name!, b.version, ctx.user.name);
            if (r.outcome === 'moved')
              ctx.audit('config.profile.rollback', `profile:${r.name}`, 'done', { from: r.from, to: r.to, devices: r.affected.length });
            return r;
          }),
        );
        return { body: result };
      },
    },
    {
      method: 'PUT',
      path: '/api/v1/devices/{id}/config-profile',
      permission: 'config.assign',
      summary: 'pin the device to a profile (body {profile: name}) or unpin it ({profile: null}: the selectors decide)',
      handle: async (ctx) => {
        const b = await ctx.body(assignBody);
        const m = manager();
        const result = ctx.commit(() =>
          answered(() => {
            const d = device(ctx.params.id!, ctx.user);
            const r = m.assign(d.id, b.profile);
            ctx.audit(b.profile ? 'config.assign' : 'config.unassign', d.id, 'done', { profile: b.profile, previous: r.previous });
            return r;
          }),
        );
        return { body: { ...result, configuration: deps.repos.configs.get(result.deviceId) ?? null } };
      },
    },
    {
      method: 'PUT',
      path: '/api/v1/devices/{id}/labels',
      permission: 'config.assign',
      summary: "replace the device's labels (body {labels: {key: value}}; {} removes them all); profiles select by them",
      handle: async (ctx) => {
        const b = await ctx.body(labelsBody);
        const m = manager();
        const result = ctx.commit(() =>
          answered(() => {
            const d = device(ctx.params.id!, ctx.user);
            const r = m.setLabels(d.id, b.labels);
            ctx.audit('device.labels', d.id, 'done', { labels: b.labels, previous: r.previous });
            return r;
          }),
        );
        return { body: result };
      },
    },
  ];
}
