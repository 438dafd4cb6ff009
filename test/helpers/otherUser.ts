import { execFileSync } from 'node:child_process';

/**
 * The `nobody` account, for tests that run a command as a user other than
 * root. Undefined only when the tests do not run as root (a developer's
 * run): switching users needs root. As root (CI), `nobody` and setpriv
 * (util-linux) must be there; a machine without them fails the tests that
 * need them instead of skipping them.
 */
export function otherUser(): { name: string; uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const [name, , uid, gid] = execFileSync('getent', ['passwd', 'nobody'], { encoding: 'utf8' }).trim().split(':');
  execFileSync('setpriv', ['--version']);
  if (!name || uid === undefined || gid === undefined) throw new Error('getent passwd nobody gave no uid and gid');
  return { name, uid: Number(uid), gid: Number(gid) };
}

/** Said by a test file that skips for want of root, so that a reader of the output sees why. */
export const NOT_ROOT_REASON = 'switching to another user needs root (CI runs as root, where these tests must run)';
