import type { Command } from 'commander';
import { USER_NAME } from '../api/accountRoutes.js';
import { FIRST_ADMIN_TOKEN_LABEL, hashSecret, newTokenSecret } from '../api/auth.js';
import { removeAdminTokenFile, supersedeFirstAdminToken } from '../api/firstAdmin.js';
import type { Config } from '../config/schema.js';
import { ExitCode, UsageError } from '../errors.js';
import type { Store } from '../store/database.js';
import type { Repositories } from '../store/repositories.js';
import { ROLES, type UserRepository, type ApiToken, type Role, type User } from '../store/userRepository.js';
import type { ApiClient } from './apiClient.js';
import { apiOptions, runApi, type ApiOptions } from './apiCommand.js';
import { localAudit, localUser, readStore, withStore } from './common.js';

/** A change with --local on the (existing) database, in one durable transaction, audited as local:<login>. */
function withUsers<T>(
  config: Config,
  fn: (
    users: UserRepository,
    store: Store,
    audit: (action: string, target: string, details?: Record<string, unknown>) => void,
    directory: Repositories['sessions'],
  ) => T,
): Promise<T> {
  return withStore(config, (store, repos) => {
    const audit = (action: string, target: string, details?: Record<string, unknown>) => localAudit(repos.audit, action, target, details);
    return store.durable(() => fn(repos.users, store, audit, repos.sessions));
  });
}

/** A read on the database opened read-only (the daemon down, or --local). */
const readUsers = <T>(config: Config, fn: (users: UserRepository) => T): Promise<T> => readStore(config, (_store, repos) => fn(repos.users));

/** --expires: hours or days; 0h makes a token that has already expired (to check a client refuses it). */
function expirySeconds(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d{1,4})(h|d)$/.exec(text.trim());
  if (!m) throw new UsageError(`--expires takes hours or days, such as 12h or 90d, not ${JSON.stringify(text)}`);
  return Number(m[1]) * (m[2] === 'h' ? 3_600 : 86_400);
}

function user(users: UserRepository, name: string): User {
  const u = users.byName(name);
  if (!u) throw new UsageError(`no user ${name} (edge-agent users list)`);
  return u;
}

const dated = <T extends { createdAt: Date; expiresAt?: Date; revokedAt?: Date; disabledAt?: Date }>(r: T): T => ({
  ...r,
  createdAt: new Date(r.createdAt),
  ...(r.expiresAt ? { expiresAt: new Date(r.expiresAt) } : {}),
  ...(r.revokedAt ? { revokedAt: new Date(r.revokedAt) } : {}),
  ...(r.disabledAt ? { disabledAt: new Date(r.disabledAt) } : {}),
});

/** Every item of a list route, a page of 1000 at a time. */
async function all<T>(client: ApiClient, path: string): Promise<T[]> {
  const items: T[] = [];
  for (let total = Infinity; items.length < total; ) {
    const page = (await client.call<{ total: number; items: T[] }>('GET', `${path}?limit=1000&offset=${items.length}`)).body;
    total = page.total;
    items.push(...page.items);
    if (page.items.length === 0) break;
  }
  return items;
}

/**
 * A user as listed: local (tokens) or directory (edge-agent login; an older daemon does not say: it had local users only).
 * A directory user has no id, and no role while it has no access.
 */
type Listed = Omit<User, 'id' | 'role' | 'createdBy'> & {
  id?: number;
  role: string | null;
  createdBy?: string;
  source?: 'local' | 'directory';
  lastLoginAt?: string;
};

type Made = ApiToken & { user: string; secret: string; firstStartTokenRevoked?: boolean };

/**
 * Users and API tokens of the local API: through the running daemon's API
 * with an administrator's token; with --local, or when the daemon is down,
 * on the database directly (for the gateway's administrator).
 */
export function registerUserCommands(program: Command, result: { code: number }): void {
  const common = apiOptions;
  const usage = (message: string) => {
    process.stderr.write(`edge-agent: ${message}\n`);
    return ExitCode.usage;
  };
  const users = program.command('users').description('users of the local API and their roles: admin, technician, viewer (administrators)');
  common(
    users
      .command('add')
      .description('add a user')
      .argument('<name>', 'user name: 1 to 64 of A-Z a-z 0-9 . _ @ -')
      .requiredOption('--role <role>', ROLES.join(', ')),
  ).action(async (name: string, o: ApiOptions & { role: string }) => {
    if (!USER_NAME.test(name)) return void (result.code = usage(`user name ${JSON.stringify(name)}: 1 to 64 of A-Z a-z 0-9 . _ @ -`));
    if (!ROLES.includes(o.role as Role)) return void (result.code = usage(`--role takes ${ROLES.join(', ')}, not ${JSON.stringify(o.role)}`));
    result.code = await runApi(
      o,
      async (client) => (await client.call<{ user: User }>('POST', '/api/v1/users', { name, role: o.role })).body.user,
      (u: User) => `user ${u.name} added as ${u.role}; give them a token: edge-agent tokens create --user ${u.name}\n`,
      {
        what: 'adding the user in the database directly',
        writes: true,
        run: (config) =>
          withUsers(config, (repo, _store, audit, directory) => {
            if (repo.byName(name)) throw new UsageError(`user ${name} exists already`);
            const person = directory.userByName(name);
            if (person) throw new UsageError(`${person.name} is a directory user: a local user cannot take their name`);
            audit('user.add', name, { role: o.role });
            return repo.add(name, o.role as Role, `local:${localUser()}`);
          }),
      },
    );
  });
  common(users.command('list').description('every user with their role and source (local, or directory: logged in with edge-agent login)')).action(
    async (o: ApiOptions) => {
      result.code = await runApi(
        o,
        async (client) => (await all<Listed>(client, '/api/v1/users')).map((u) => ({ ...dated(u), source: u.source ?? 'local' })),
        (rows: Listed[]) =>
          rows.length === 0
            ? 'no users\n'
            : rows
                .map((u) => `${u.name}\t${u.role ?? '-'}\t${u.source ?? 'local'}${u.disabledAt ? `\tdisabled ${u.disabledAt.toISOString()}` : ''}\n`)
                .join(''),
        {
          what: 'read from the database directly',
          run: (config) =>
            readStore(config, (_store, repos): Listed[] => [
              ...repos.users.list().map((u): Listed => ({ ...u, source: 'local' })),
              // As GET /api/v1/users lists them, and never the password verifier of a cached login.
              ...repos.sessions.users().map(
                (u): Listed => ({
                  name: u.name,
                  role: u.role ?? null,
                  source: 'directory',
                  createdAt: u.firstLoginAt,
                  lastLoginAt: u.lastLoginAt.toISOString(),
                  ...(u.disabledAt ? { disabledAt: u.disabledAt } : {}),
                }),
              ),
            ]).then((rows) => rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))),
        },
      );
    },
  );
  common(users.command('disable').description('disable a user: none of their tokens works any more').argument('<name>', 'user name')).action(
    async (name: string, o: ApiOptions) => {
      result.code = await runApi(
        o,
        async (client) => (await client.call<{ user: User }>('POST', `/api/v1/users/${encodeURIComponent(name)}/disable`)).body.user,
        (u: User) => `user ${u.name} disabled\n`,
        {
          what: 'disabling the user in the database directly',
          writes: true,
          run: (config) =>
            withUsers(config, (repo, _store, audit) => {
              const u = user(repo, name);
              repo.disable(u.id);
              audit('user.disable', u.name);
              return repo.get(u.id)!;
            }),
        },
      );
    },
  );

  const tokens = program.command('tokens').description('API tokens: random, shown once, stored hashed (administrators)');
  common(
    tokens
      .command('create')
      .description('make a token for a user; the secret is printed once and never again')
      .requiredOption('--user <name>', 'whose token')
      .option('--label <text>', 'what it is for', 'cli')
      .option('--expires <duration>', 'expires after this long: 12h, 90d (default: never)'),
  ).action(async (o: ApiOptions & { user: string; label: string; expires?: string }) => {
    let seconds: number | undefined;
    try {
      seconds = expirySeconds(o.expires);
    } catch (err) {
      return void (result.code = usage((err as Error).message));
    }
    const label = o.label.slice(0, 128);
    if (label === FIRST_ADMIN_TOKEN_LABEL)
      return void (result.code = usage(`--label "${FIRST_ADMIN_TOKEN_LABEL}" is kept for the token the agent makes at its first start`));
    result.code = await runApi(
      o,
      async (client) => {
        if (seconds === 0) throw new UsageError('--expires 0h makes a token that has already expired: only with --local (to check that clients refuse it)');
        const r = (
          await client.call<{ token: ApiToken; secret: string; firstStartTokenRevoked?: boolean }>('POST', '/api/v1/tokens', {
            user: o.user,
            label,
            ...(seconds !== undefined ? { expiresInSeconds: seconds } : {}),
          })
        ).body;
        return { ...dated(r.token), user: o.user, secret: r.secret, ...(r.firstStartTokenRevoked ? { firstStartTokenRevoked: true } : {}) };
      },
      (t: Made) =>
        `token ${t.id} for ${t.user}${t.expiresAt ? `, expires ${t.expiresAt.toISOString()}` : ''}:\n${t.secret}\n` +
        `it is shown this once; keep it where only ${t.user} can read it\n` +
        (t.firstStartTokenRevoked ? 'the first-start admin token (admin.token) is revoked now: an administrator token of your own exists\n' : ''),
      {
        what: 'making the token in the database directly',
        writes: true,
        run: async (config) => {
          const made = await withUsers(config, (repo, _store, audit) => {
            const u = user(repo, o.user);
            if (u.disabledAt) throw new UsageError(`user ${u.name} is disabled`);
            const secret = newTokenSecret();
            const token = repo.addToken(u.id, hashSecret(secret), label, seconds === undefined ? undefined : new Date(Date.now() + seconds * 1000));
            audit('token.create', `token ${token.id}`, { user: u.name, label });
            // An administrator's own token ends the first-start one, as through the API.
            const ended = u.role === 'admin' ? supersedeFirstAdminToken(repo, token.expiresAt) : [];
            for (const id of ended) audit('token.revoke', `token ${id}`, { user: 'admin', reason: `first-start token, superseded by token ${token.id}` });
            return { ...token, user: u.name, secret, ...(ended.length > 0 ? { firstStartTokenRevoked: true } : {}) };
          });
          if (made.firstStartTokenRevoked) removeAdminTokenFile(config.agent.dataDir);
          return made;
        },
      },
    );
  });
  common(tokens.command('list').description('tokens with their user, label and expiry (never the secret)')).action(async (o: ApiOptions) => {
    result.code = await runApi(
      o,
      async (client) => {
        const names = new Map((await all<User>(client, '/api/v1/users')).map((u) => [u.id, u.name]));
        return (await all<ApiToken>(client, '/api/v1/tokens')).map((t) => ({ ...dated(t), user: names.get(t.userId) ?? '?' }));
      },
      (rows: (ApiToken & { user: string })[]) =>
        rows.length === 0
          ? 'no tokens\n'
          : rows
              .map((t) => {
                const state = t.revokedAt ? 'revoked' : t.expiresAt && t.expiresAt <= new Date() ? 'expired' : 'valid';
                return `${t.id}\t${t.user}\t${t.label}\t${state}${t.expiresAt ? `\texpires ${t.expiresAt.toISOString()}` : ''}`;
              })
              .join('\n') + '\n',
      {
        what: 'read from the database directly',
        run: (config) =>
          readUsers(config, (repo) => {
            const names = new Map(repo.list().map((u) => [u.id, u.name]));
            return repo.tokens().map((t) => ({ ...t, user: names.get(t.userId) ?? '?' }));
          }),
      },
    );
  });
  common(tokens.command('revoke').description('make a token unusable').argument('<id>', 'token id (tokens list)')).action(async (id: string, o: ApiOptions) => {
    if (!/^\d+$/.test(id)) return void (result.code = usage(`no token ${id} (edge-agent tokens list)`));
    result.code = await runApi(
      o,
      async (client) => (await client.call<{ token: ApiToken }>('POST', `/api/v1/tokens/${id}/revoke`)).body.token,
      (t: ApiToken) => `token ${t.id} revoked\n`,
      {
        what: 'revoking the token in the database directly',
        writes: true,
        run: (config) =>
          withUsers(config, (repo, _store, audit) => {
            const t = repo.token(Number(id));
            if (!t) throw new UsageError(`no token ${id} (edge-agent tokens list)`);
            repo.revokeToken(t.id);
            audit('token.revoke', `token ${t.id}`);
            return repo.token(t.id)!;
          }),
      },
    );
  });
}
