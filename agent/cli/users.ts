import type { Command } from 'commander';
import pino from 'pino';
import { hashSecret, newTokenSecret } from '../api/auth.js';
import type { Config } from '../config/schema.js';
import { UsageError } from '../errors.js';
import { Store } from '../store/database.js';
import { ROLES, UserRepository, type ApiToken, type Role, type User } from '../store/userRepository.js';
import { CONFIG_OPTION_HELP, run, type Common } from './common.js';

const NAME = /^[A-Za-z0-9._@-]{1,64}$/;

function withUsers<T>(config: Config, fn: (users: UserRepository, store: Store) => T): T {
  const { store } = Store.open(config.store, pino({ level: 'silent' }));
  try {
    return fn(new UserRepository(store), store);
  } finally {
    store.close();
  }
}

const actor = () => process.env.SUDO_USER ?? process.env.USER ?? 'cli';

function parseExpiry(text: string | undefined): Date | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d{1,4})(h|d)$/.exec(text.trim());
  if (!m) throw new UsageError(`--expires takes hours or days, such as 12h or 90d, not ${JSON.stringify(text)}`);
  return new Date(Date.now() + Number(m[1]) * (m[2] === 'h' ? 3_600_000 : 86_400_000));
}

function user(users: UserRepository, name: string): User {
  const u = users.byName(name);
  if (!u) throw new UsageError(`no user ${name} (edge-agent users list)`);
  return u;
}

/**
 * Users and API tokens of the local API, managed on the gateway itself
 * (these commands open the database: they are for the gateway's
 * administrator, with or without the daemon running).
 */
export function registerUserCommands(program: Command, result: { code: number }): void {
  const common = (c: Command) => c.option('-c, --config <path>', CONFIG_OPTION_HELP).option('--json', 'machine-readable output');
  const users = program.command('users').description('users of the local API and their roles: admin, technician, viewer');
  common(users.command('add').description('add a user').argument('<name>', 'user name: 1 to 64 of A-Z a-z 0-9 . _ @ -').requiredOption('--role <role>', ROLES.join(', '))).action(
    async (name: string, o: Common & { role: string }) => {
      result.code = await run(o, (config) => {
        if (!NAME.test(name)) throw new UsageError(`user name ${JSON.stringify(name)}: 1 to 64 of A-Z a-z 0-9 . _ @ -`);
        if (!ROLES.includes(o.role as Role)) throw new UsageError(`--role takes ${ROLES.join(', ')}, not ${JSON.stringify(o.role)}`);
        return withUsers(config, (repo) => {
          if (repo.byName(name)) throw new UsageError(`user ${name} exists already`);
          return repo.add(name, o.role as Role, actor());
        });
      }, (u: User) => `user ${u.name} added as ${u.role}; give them a token: edge-agent tokens create --user ${u.name}\n`);
    },
  );
  common(users.command('list').description('every user with their role')).action(async (o: Common) => {
    result.code = await run(o, (config) => withUsers(config, (repo) => repo.list()), (rows: User[]) =>
      rows.length === 0 ? 'no users\n' : `${rows.map((u) => `${u.name}\t${u.role}${u.disabledAt ? `\tdisabled ${u.disabledAt.toISOString()}` : ''}`).join('\n')}\n`);
  });
  common(users.command('disable').description('disable a user: none of their tokens works any more').argument('<name>', 'user name')).action(async (name: string, o: Common) => {
    result.code = await run(o, (config) => withUsers(config, (repo) => {
      const u = user(repo, name);
      repo.disable(u.id);
      return repo.get(u.id)!;
    }), (u: User) => `user ${u.name} disabled\n`);
  });

  const tokens = program.command('tokens').description('API tokens: random, shown once, stored hashed');
  common(
    tokens
      .command('create')
      .description('make a token for a user; the secret is printed once and never again')
      .requiredOption('--user <name>', 'whose token')
      .option('--label <text>', 'what it is for', 'cli')
      .option('--expires <duration>', 'expires after this long: 12h, 90d (default: never)'),
  ).action(async (o: Common & { user: string; label: string; expires?: string }) => {
    result.code = await run(o, (config) => withUsers(config, (repo, store) => {
      const u = user(repo, o.user);
      if (u.disabledAt) throw new UsageError(`user ${u.name} is disabled`);
      const secret = newTokenSecret();
      const token = store.durable(() => repo.addToken(u.id, hashSecret(secret), o.label.slice(0, 200), parseExpiry(o.expires)));
      return { ...token, user: u.name, secret };
    }), (t: ApiToken & { user: string; secret: string }) =>
      `token ${t.id} for ${t.user}${t.expiresAt ? `, expires ${t.expiresAt.toISOString()}` : ''}:\n${t.secret}\nit is shown this once; keep it where only ${t.user} can read it\n`);
  });
  common(tokens.command('list').description('tokens with their user, label, expiry and last use (never the secret)')).action(async (o: Common) => {
    result.code = await run(o, (config) => withUsers(config, (repo) => {
      const names = new Map(repo.list().map((u) => [u.id, u.name]));
      return repo.tokens().map((t) => ({ ...t, user: names.get(t.userId) ?? '?' }));
    }), (rows: (ApiToken & { user: string })[]) =>
      rows.length === 0 ? 'no tokens\n' : `${rows.map((t) => `${t.id}\t${t.user}\t${t.label}\t${t.revokedAt ? 'revoked' : t.expiresAt && t.expiresAt <= new Date() ? 'expired' : 'valid'}${t.expiresAt ? `\texpires ${t.expiresAt.toISOString()}` : ''}`).join('\n')}\n`);
  });
  common(tokens.command('revoke').description('make a token unusable').argument('<id>', 'token id (tokens list)')).action(async (id: string, o: Common) => {
    result.code = await run(o, (config) => withUsers(config, (repo) => {
      const t = /^\d+$/.test(id) ? repo.token(Number(id)) : undefined;
      if (!t) throw new UsageError(`no token ${id} (edge-agent tokens list)`);
      repo.revokeToken(t.id);
      return repo.token(t.id)!;
    }), (t: ApiToken) => `token ${t.id} revoked\n`);
  });
}
