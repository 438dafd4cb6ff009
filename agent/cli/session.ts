import { userInfo } from 'node:os';
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../errors.js';
import { ApiAnswerError, ApiClient, type Credential, type CredentialSource } from './apiClient.js';
import { apiOptions, runApi, type ApiOptions } from './apiCommand.js';
import { CONFIG_OPTION_HELP } from './common.js';
import { readPassword } from './password.js';
import { readSessionFile, removeSessionFile, sessionFilePath, writeSessionFile, type SessionRecord } from './sessionFile.js';

/** Where a directory user may work: parts of the plant (none: the whole plant). */
export type Scope = { site?: string; area?: string; line?: string }[];

/** The session of POST /api/v1/session (never with its token: that goes to the session file only). */
interface Session {
  id: number;
  user: string;
  source: string;
  role: string;
  scope?: Scope;
  mayDecide?: boolean;
  expiresAt: string;
  cached?: boolean;
  endedAt?: string;
}

/** GET /api/v1/me. */
interface Me {
  user: { name: string; role: string; source?: 'local' | 'directory'; scope?: Scope; mayDecide?: boolean; expiresAt?: string; session?: number };
  permissions: string[];
}

export const scopeText = (scope: Scope | undefined): string =>
  scope && scope.length > 0
    ? scope.map((s) => (['site', 'area', 'line'] as const).flatMap((k) => (s[k] ? [`${k} ${s[k]}`] : [])).join(' ')).join('; ')
    : 'whole plant';

/** A time in this machine's time zone, with its offset: the user reads it against the wall clock. */
export function localTime(iso: string): string {
  const d = new Date(iso);
  const pad = (n: number) => String(n).padStart(2, '0');
  const offset = -d.getTimezoneOffset();
  const zone = `UTC${offset < 0 ? '-' : '+'}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())} ${zone}`;
}

const CREDENTIAL_TEXT: Record<CredentialSource, string> = {
  '--token': '--token',
  EDGE_AGENT_TOKEN: '$EDGE_AGENT_TOKEN',
  'token file': 'token file',
  'session file': 'session file of edge-agent login',
  'admin.token': 'admin.token (the first-start administrator token)',
};

/** The login name of the OS user, the default directory user name. */
function osLogin(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    // A uid without a passwd entry (a container's): --user is then needed.
    return undefined;
  }
}

/** The options of login and logout: they choose their credential themselves, so no --token. */
const endpointOptions = (c: Command): Command =>
  c
    .option('-c, --config <path>', CONFIG_OPTION_HELP)
    .option('--json', 'machine-readable output')
    .option('--ca <file>', "PEM CA chain to trust the API's certificate with (TLS; default: $EDGE_AGENT_CA, else the gateway CA's files)");

/**
 * Directory (Active Directory) logins: `login` starts a session kept in a
 * file only this user can read, which the other commands then use; `logout`
 * ends it; `whoami` says who the commands act as, and why.
 */
export function registerSessionCommands(program: Command, result: { code: number }): void {
  const usage = (message: string) => {
    process.stderr.write(`edge-agent: ${message}\n`);
    return ExitCode.usage;
  };

  endpointOptions(
    program
      .command('login')
      .description('log in as a directory user: the session is kept in a file only you can read, and the other commands use it until it ends')
      .option('--user <name>', 'directory user name (default: the login name of the OS user running the command)')
      .option('--password-stdin', 'read the password from the first line of standard input (default: ask on the terminal, without echo)')
      .addHelpText(
        'after',
        '\nThe password is never taken on the command line. The session is kept in $EDGE_AGENT_SESSION_FILE, else\n' +
          '$XDG_CONFIG_HOME/edge-agent/session, else ~/.config/edge-agent/session (mode 0600).',
      ),
  ).action(async (o: ApiOptions & { user?: string; passwordStdin?: boolean }) => {
    const user = o.user ?? osLogin();
    if (o.user === '') return void (result.code = usage('--user: the name is empty'));
    if (!user) return void (result.code = usage('--user NAME: this OS user has no login name to default to'));
    let password: string | undefined;
    try {
      password = await readPassword(user, o.passwordStdin === true);
    } catch (err) {
      if (!(err instanceof UsageError)) throw err;
      return void (result.code = usage(err.message));
    }
    if (password === undefined) {
      process.stderr.write('edge-agent: login cancelled\n');
      return void (result.code = ExitCode.forced);
    }
    const file = sessionFilePath();
    result.code = await runApi(
      o,
      async (client, config) => {
        const answer = (await client.call<{ token: string; session: Session }>('POST', '/api/v1/session', { user, password })).body;
        const s = answer.session;
        // The session this file held for the same gateway is replaced: end it, so that no session is left open that no file holds.
        const previous = readSessionFile(file);
        if (previous.state === 'ok' && previous.session.url === client.url && Date.parse(previous.session.expiresAt) > Date.now())
          await ApiClient.for(config, o, process.env, { token: previous.session.token, source: 'session file' })
            .call('DELETE', '/api/v1/session')
            .catch(() => undefined);
        try {
          writeSessionFile(file, { token: answer.token, user: s.user, role: s.role, expiresAt: s.expiresAt, url: client.url });
        } catch (err) {
          // A session no file holds cannot be used or ended: end it now rather than leave it open until it expires.
          const made = ApiClient.for(config, o, process.env, { token: answer.token, source: 'session file' });
          await made.call('DELETE', '/api/v1/session').catch(() => undefined);
          throw new UsageError(`cannot keep the session in ${file} (${(err as Error).message}); set EDGE_AGENT_SESSION_FILE to a file you may write`, {
            cause: err,
          });
        }
        return { session: s, file };
      },
      (r: { session: Session; file: string }) =>
        `logged in as ${r.session.user} (${r.session.role}${r.session.scope?.length ? `, ${scopeText(r.session.scope)}` : ''}) ` +
        `until ${localTime(r.session.expiresAt)}; session kept in ${r.file}\n`,
      undefined,
      // No token at all: a login is what makes one (and a stale one would only be refused).
      (config) => ApiClient.for(config, o, process.env, null),
    );
  });

  endpointOptions(program.command('logout').description('end the session of edge-agent login and delete its file')).action(async (o: ApiOptions) => {
    const file = sessionFilePath();
    const read = readSessionFile(file);
    if (read.state !== 'ok') {
      if (read.state === 'refused') process.stderr.write(`edge-agent: ignoring the session file ${file}: ${read.why}\n`);
      process.stdout.write(o.json ? `${JSON.stringify({ loggedIn: false })}\n` : 'not logged in\n');
      return void (result.code = ExitCode.ok);
    }
    const session: SessionRecord = read.session;
    type Ended = { user: string; ended: 'now' | 'before'; file: string };
    result.code = await runApi(
      o,
      async (client): Promise<Ended> => {
        if (client.url !== session.url) {
          throw new UsageError(
            `the session in ${file} is for ${session.url}, not for this gateway (${client.url}): ` +
              'log out with the configuration of that gateway (--config), or delete the file',
          );
        }
        let ended: Ended['ended'] = 'now';
        if (Date.parse(session.expiresAt) <= Date.now()) ended = 'before';
        else {
          try {
            await client.call('DELETE', '/api/v1/session');
          } catch (err) {
            // 401: the daemon no longer knows the session (expired, ended, the user lost access): the file is only a leftover.
            if (!(err instanceof ApiAnswerError && err.status === 401)) throw err;
            ended = 'before';
          }
        }
        removeSessionFile(file);
        return { user: session.user, ended, file };
      },
      (r: Ended) =>
        r.ended === 'now'
          ? `logged out: the session of ${r.user} has ended; ${r.file} removed\n`
          : `the session of ${r.user} had already ended; ${r.file} removed\n`,
      undefined,
      (config) => ApiClient.for(config, o, process.env, { token: session.token, source: 'session file', file, expiresAt: session.expiresAt }),
    );
  });

  apiOptions(
    program.command('whoami').description('who the commands act as: user, directory or local, role, scope, expiry, and whose credential'),
    false,
  ).action(async (o: ApiOptions) => {
    type Who = Me & { credential?: Omit<Credential, 'token'> };
    result.code = await runApi(
      o,
      async (client): Promise<Who> => {
        const me = (await client.call<Me>('GET', '/api/v1/me')).body;
        const c = client.credential;
        // Where the token came from, never the token.
        const from = c && { source: c.source, ...(c.file ? { file: c.file } : {}), ...(c.expiresAt ? { expiresAt: c.expiresAt } : {}) };
        return { ...me, ...(from ? { credential: from } : {}) };
      },
      (w: Who) => {
        const expiresAt = w.user.expiresAt ?? w.credential?.expiresAt;
        const from = w.credential ? `${CREDENTIAL_TEXT[w.credential.source]}${w.credential.file ? ` ${w.credential.file}` : ''}` : 'none';
        const rows: [string, string][] = [
          ['user', w.user.name],
          ['source', w.user.source ?? 'local'],
          ['role', w.user.role],
          ['scope', scopeText(w.user.scope)],
          ...(w.user.mayDecide === undefined ? [] : [['decides', w.user.mayDecide ? 'yes' : 'no'] as [string, string]]),
          ['expires', expiresAt ? localTime(expiresAt) : 'not said by the API (tokens list shows token expiries)'],
          ['credential', from],
        ];
        return rows.map(([k, v]) => `${k.padEnd(11)}${v}\n`).join('');
      },
    );
  });
}
