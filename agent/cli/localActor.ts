import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';

/** Login names by uid, from the passwd database. */
export type PasswdLookup = (uid: number) => string | undefined;

/**
 * Who runs a command on the gateway, for the audit log of changes made on
 * the database directly (--local): the login of the process's real uid,
 * from the passwd database. Environment variables are claims anyone can
 * make (`SUDO_USER=tech-anna edge-agent ...`), so they never name the actor
 * on their own. Only when the real uid is root, and SUDO_UID is an account
 * whose login is SUDO_USER (as sudo sets them), is the sudo caller recorded
 * as well: `root (sudo: anna)`. An account without a passwd entry (a
 * container's arbitrary uid) is `uid <n>`.
 */
export function localActor(env: NodeJS.ProcessEnv = process.env, uid: number = realUid(), nameOf: PasswdLookup = passwdName): string {
  const self = nameOf(uid) ?? `uid ${uid}`;
  if (uid !== 0) return self;
  const sudoUid = env.SUDO_UID;
  const sudoUser = env.SUDO_USER;
  if (sudoUid === undefined || sudoUser === undefined || !/^\d+$/.test(sudoUid)) return self;
  const claimed = Number(sudoUid);
  // sudo run by root itself sets SUDO_UID=0: nothing to add.
  if (claimed === 0 || nameOf(claimed) !== sudoUser) return self;
  return `${self} (sudo: ${sudoUser})`;
}

function realUid(): number {
  // No uids on Windows; the agent runs on Linux gateways.
  return process.getuid?.() ?? -1;
}

/** The login of `uid`: os.userInfo() for this process's own, else getent (NSS: LDAP, sssd), else /etc/passwd. */
export const passwdName: PasswdLookup = (uid) => {
  if (uid < 0) return undefined;
  if (uid === process.geteuid?.()) {
    try {
      return userInfo().username;
    } catch {
      // No passwd entry for this uid: getent will not find one either.
      return undefined;
    }
  }
  try {
    return parse(execFileSync('getent', ['passwd', String(uid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5_000 }), uid);
  } catch (err) {
    // getent exits 2 when there is no such uid; fall back to the file only when getent itself is missing.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return undefined;
  }
  try {
    return parse(readFileSync('/etc/passwd', 'utf8'), uid);
  } catch {
    return undefined;
  }
};

/** The name on the passwd line of `uid` (name:password:uid:gid:...). */
function parse(text: string, uid: number): string | undefined {
  for (const line of text.split('\n')) {
    const [name, , id] = line.split(':');
    if (name && id !== undefined && /^\d+$/.test(id) && Number(id) === uid) return name;
  }
  return undefined;
}
