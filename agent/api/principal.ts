import type { ScopePart } from '../config/authSchema.js';
import type { Location } from '../inventory/device.js';
import type { Session } from '../store/sessionRepository.js';
import type { ApiToken, User } from '../store/userRepository.js';
import type { AnyRole } from './auth.js';

/**
 * Who a request is from: a local user with an API token, or a directory
 * user with a session. Names are unique across both (a local user cannot
 * take a directory user's name, nor the other way round), so audit entries
 * name people unambiguously.
 */
export interface Principal {
  name: string;
  role: AnyRole;
  source: 'local' | 'directory';
  /** The local user (source local). */
  user?: User;
  token?: ApiToken;
  /** The session (source directory). */
  session?: Session;
  /** Where in the plant this principal may see and act; absent: the whole plant. */
  scope?: ScopePart[];
  /** A contractor whose mapping lets them approve and reject. */
  mayDecide?: boolean;
  /** IPv4 ranges their OPC UA discovery runs may cover (scoped principals). */
  ranges?: string[];
  /** When the credential ends (a session always ends). */
  expiresAt?: Date;
}

export function localPrincipal(user: User, token: ApiToken): Principal {
  return { name: user.name, role: user.role, source: 'local', user, token, ...(token.expiresAt ? { expiresAt: token.expiresAt } : {}) };
}

export function sessionPrincipal(session: Session): Principal {
  const g = session.grant;
  return {
    name: session.userName,
    role: session.role,
    source: 'directory',
    session,
    ...(g.scope ? { scope: g.scope } : {}),
    ...(g.mayDecide ? { mayDecide: true } : {}),
    ...(g.ranges ? { ranges: g.ranges } : {}),
    expiresAt: session.expiresAt,
  };
}

/** What /api/v1/me and a login answer say of a principal (never a secret or hash). */
export function describePrincipal(p: Principal): Record<string, unknown> {
  return {
    name: p.name,
    role: p.role,
    source: p.source,
    ...(p.scope ? { scope: p.scope } : {}),
    ...(p.mayDecide ? { mayDecide: true } : {}),
    ...(p.ranges ? { ranges: p.ranges } : {}),
    ...(p.expiresAt ? { expiresAt: p.expiresAt.toISOString() } : {}),
    ...(p.session ? { session: p.session.id, cached: p.session.cached } : {}),
    ...(p.user ? { createdAt: p.user.createdAt.toISOString(), createdBy: p.user.createdBy } : {}),
    ...(p.token ? { token: p.token.id } : {}),
  };
}

const SCOPE_FIELDS = ['site', 'area', 'line'] as const;

/**
 * Whether a device at `location` lies inside `scope`: some part whose every
 * field equals the device's own, or the gateway's (`fallback`, sync.location)
 * where the device has none. No scope: the whole plant.
 */
export function inScope(scope: readonly ScopePart[] | undefined, location: Location | undefined, fallback: Location): boolean {
  if (!scope) return true;
  return scope.some((part) =>
    SCOPE_FIELDS.every((f) => {
      const want = part[f];
      if (want === undefined) return true;
      const have = location?.[f] || fallback[f] || undefined;
      return have === want;
    }),
  );
}
