import { chmodSync, closeSync, constants, fstatSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { writeFileAtomic } from '../../certs/keys/fileKey.js';

/** What `edge-agent login` keeps: the session token and what it was made for. */
export interface SessionRecord {
  token: string;
  user: string;
  role: string;
  expiresAt: string;
  /** The API url the session was made against: it is sent to that gateway only. */
  url: string;
}

/**
 * Where the session is kept: $EDGE_AGENT_SESSION_FILE, else
 * $XDG_CONFIG_HOME/edge-agent/session, else ~/.config/edge-agent/session.
 * A relative XDG_CONFIG_HOME is ignored, as the XDG specification says.
 */
export function sessionFilePath(env: NodeJS.ProcessEnv = process.env, home: () => string = homedir): string {
  if (env.EDGE_AGENT_SESSION_FILE) return env.EDGE_AGENT_SESSION_FILE;
  const xdg = env.XDG_CONFIG_HOME;
  return join(xdg && isAbsolute(xdg) ? xdg : join(home(), '.config'), 'edge-agent', 'session');
}

/** A session file: absent, refused (with why), or its record. */
export type SessionRead = { state: 'absent' } | { state: 'refused'; why: string } | { state: 'ok'; session: SessionRecord };

/**
 * Reads a session file as ssh reads a private key: one that another user
 * owns or that group or others may access is refused (someone else could
 * have planted it, or read the token in it). The checks are made on the
 * opened file, so a file swapped in between is not what gets read.
 */
export function readSessionFile(path: string, uid: number | undefined = process.getuid?.()): SessionRead {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { state: 'absent' };
    return { state: 'refused', why: code === 'ELOOP' ? 'it is a symbolic link' : `it cannot be read (${code ?? (err as Error).message})` };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { state: 'refused', why: 'it is not a regular file' };
    if (uid !== undefined && st.uid !== uid) return { state: 'refused', why: `it is owned by uid ${st.uid}, not by you (uid ${uid})` };
    if ((st.mode & 0o077) !== 0) {
      return { state: 'refused', why: `its permissions ${(st.mode & 0o777).toString(8).padStart(4, '0')} let others read it (chmod 600 it, or log in again)` };
    }
    let parsed: Partial<SessionRecord>;
    try {
      parsed = JSON.parse(readFileSync(fd, 'utf8')) as Partial<SessionRecord>;
    } catch {
      return { state: 'refused', why: 'it is not JSON' };
    }
    const { token, user, role, expiresAt, url } = parsed;
    if (![token, user, role, expiresAt, url].every((v) => typeof v === 'string') || Number.isNaN(Date.parse(expiresAt!))) {
      return { state: 'refused', why: 'it lacks token, user, role, expiresAt or url' };
    }
    return { state: 'ok', session: { token: token!, user: user!, role: role!, expiresAt: expiresAt!, url: url! } };
  } finally {
    closeSync(fd);
  }
}

/** Writes the session file: its directory made 0700 when missing, the file replaced atomically with mode 0600. */
export function writeSessionFile(path: string, session: SessionRecord): void {
  const dir = dirname(path);
  // mkdir's mode is narrowed by the umask, never widened: chmod makes it exactly 0700 (only a directory made here).
  const made = mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (made !== undefined) chmodSync(dir, 0o700);
  writeFileAtomic(path, `${JSON.stringify(session, null, 2)}\n`, 0o600);
}

export function removeSessionFile(path: string): void {
  rmSync(path, { force: true });
}
