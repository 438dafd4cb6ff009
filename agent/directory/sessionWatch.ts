import { Counter, Gauge, type Registry } from 'prom-client';
import type { DirectoryConfig } from '../config/authSchema.js';
import type { Config } from '../config/schema.js';
import type { EventBus } from '../events.js';
import type { Service } from '../lifecycle/service.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import type { Repositories } from '../store/repositories.js';
import type { DirectoryUser, Session } from '../store/sessionRepository.js';
import { type Access, accessOf, sameAccess } from './grants.js';
import { UNCHECKED_SESSION_MS } from './logins.js';
import type { Directory } from './types.js';

export type EndKind = 'logout' | 'expired' | 'deprovisioned' | 'deleted' | 'unverified' | 'off' | 'disabled-here';

export interface SessionWatchDeps {
  log: Logger;
  config: () => DirectoryConfig;
  directory: () => Directory | undefined;
  store: Store;
  repos: Pick<Repositories, 'sessions' | 'audit'>;
  bus: Pick<EventBus, 'emit'>;
  registry: Registry;
}

/**
 * Keeps directory sessions true to the directory. Every
 * auth.directory.recheckIntervalSeconds it ends sessions past their expiry,
 * then asks the directory, in one batch for all live sessions (1 search for
 * the accounts and 1 per mapped group, whatever the number of sessions),
 * what each user's account and groups are now: a user disabled, locked,
 * expired, deleted or out of every mapped group loses their sessions; a
 * changed role or scope is applied to them. Each change is committed with
 * its audit entry, then told on the bus (session.ended), which closes the
 * user's open streams. While the directory cannot be reached, sessions last
 * checked longer ago than offline.keepSessionsMinutes end.
 */
export class SessionWatch implements Service {
  readonly name = 'sessions';
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly checks: Counter<'outcome'>;
  private readonly ended: Counter<'reason'>;

  constructor(private readonly deps: SessionWatchDeps) {
    const registers = [deps.registry];
    const sessions = () => deps.repos.sessions;
    new Gauge({
      name: 'edge_agent_directory_sessions',
      help: 'Directory sessions not ended',
      registers,
      collect() {
        this.set(sessions().live().length);
      },
    });
    this.checks = new Counter({
      name: 'edge_agent_directory_rechecks_total',
      help: 'Looks at the directory for the users holding sessions, by outcome (ok, failed: the directory could not be reached)',
      labelNames: ['outcome'],
      registers,
    });
    this.ended = new Counter({
      name: 'edge_agent_directory_sessions_ended_total',
      help: 'Directory sessions ended, by reason: logout, expired, deprovisioned, deleted, unverified (directory unreachable too long), off, disabled-here',
      labelNames: ['reason'],
      registers,
    });
    for (const outcome of ['ok', 'failed']) this.checks.inc({ outcome }, 0);
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.checkFiles();
    this.schedule();
  }

  /** A file auth.directory names that cannot be read is said at start: local users work on, directory logins answer 503. */
  private checkFiles(): void {
    try {
      this.deps.directory()?.checkFiles?.();
    } catch (err) {
      this.deps.log.error({ err }, 'directory logins cannot work until this is fixed');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  reload(config: Config): void {
    // The interval is read at each turn; a shorter one should apply now, not after the longer wait.
    clearTimeout(this.timer);
    if (!this.running) this.schedule(config.auth.directory.recheckIntervalSeconds);
  }

  private schedule(seconds = this.deps.config().recheckIntervalSeconds): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.check()
        .catch((err: unknown) => this.deps.log.error({ err }, 'session check failed'))
        .finally(() => {
          this.running = undefined;
          this.schedule();
        });
    }, seconds * 1000);
    this.timer.unref();
  }

  /** One look: exported for the tests and for a recheck asked for at once. */
  async check(now = new Date()): Promise<void> {
    const config = this.deps.config();
    const { sessions } = this.deps.repos;
    const ends: { session: Session; kind: EndKind; reason: string }[] = [];
    const changes: { session: Session; role: Session['role']; grant: Session['grant']; expiresAt: Date }[] = [];
    const confirmed: Session[] = [];
    /** Verifiers of users whose access the directory took away or changed: deleted, or given the new grant. */
    const verifiers: { user: DirectoryUser; access: Access | undefined }[] = [];
    let live = sessions.live();
    for (const s of live) if (s.expiresAt <= now) ends.push({ session: s, kind: 'expired', reason: 'expired' });
    live = live.filter((s) => s.expiresAt > now);
    const directory = this.deps.directory();
    const cached = config.enabled && config.offline.cachedLogins ? sessions.withVerifier() : [];
    if (!config.enabled || !directory) {
      for (const s of live) ends.push({ session: s, kind: 'off', reason: 'directory logins were switched off (auth.directory.enabled)' });
    } else if (!directory.canRecheck) {
      // Nobody can look again (no service account, perhaps since a reload): a session lasts UNCHECKED_SESSION_MS past its last check.
      for (const s of live)
        if (now.getTime() - s.verifiedAt.getTime() >= UNCHECKED_SESSION_MS)
          ends.push({ session: s, kind: 'unverified', reason: 'unverified: without a service account a session cannot be checked again' });
    } else if (live.length > 0 || cached.length > 0) {
      const guids = [...new Set([...live.map((s) => s.guid), ...cached.map((u) => u.guid)])];
      try {
        const accounts = await directory.recheck(
          guids,
          config.groups.map((g) => g.group),
        );
        this.checks.inc({ outcome: 'ok' });
        for (const s of live) {
          const account = accounts.get(s.guid);
          if (!account) {
            ends.push({ session: s, kind: 'deleted', reason: 'deprovisioned: the account is gone from the directory' });
            continue;
          }
          const access = accessOf(account, config.groups, now);
          if (!access.ok) {
            ends.push({ session: s, kind: 'deprovisioned', reason: `deprovisioned: ${access.why}` });
            continue;
          }
          const cap = Math.min(s.createdAt.getTime() + config.sessionHours * 3_600_000, access.grant.until ? Date.parse(access.grant.until) : Infinity);
          if (sameAccess(access, s)) confirmed.push(s);
          else changes.push({ session: s, role: access.role, grant: access.grant, expiresAt: new Date(cap) });
        }
        for (const user of cached) {
          const account = accounts.get(user.guid);
          verifiers.push({ user, access: account ? accessOf(account, config.groups, now) : undefined });
        }
      } catch (err) {
        this.checks.inc({ outcome: 'failed' });
        const keepMs = config.offline.keepSessionsMinutes * 60_000;
        this.deps.log.warn({ err, sessions: live.length }, 'directory unreachable: sessions kept until offline.keepSessionsMinutes after their last check');
        for (const s of live)
          if (now.getTime() - s.verifiedAt.getTime() >= keepMs)
            ends.push({ session: s, kind: 'unverified', reason: `unverified: the directory could not be reached since ${s.verifiedAt.toISOString()}` });
      }
    }
    const dropVerifiers = config.enabled && !config.offline.cachedLogins;
    if (ends.length === 0 && changes.length === 0 && confirmed.length === 0 && verifiers.length === 0 && !dropVerifiers) return;
    const { endedIds, changedIds } = this.deps.store.durable(() => {
      const done: number[] = [];
      const changed: number[] = [];
      // Cached logins off: no verifier is kept, so that none could be used should they be switched on again.
      if (dropVerifiers) sessions.clearVerifiers();
      for (const e of ends) if (this.end(e.session, e.kind, e.reason, now)) done.push(e.session.id);
      for (const c of changes) {
        // A session ended meanwhile (a logout) keeps its end: nothing to change.
        if (!sessions.verified(c.session.id, c.role, c.grant, c.expiresAt, now)) continue;
        changed.push(c.session.id);
        sessions.setGrant(c.session.userId, c.role, c.grant);
        this.deps.repos.audit.add({
          actor: c.session.userName,
          role: c.role,
          action: 'session.change',
          target: `session ${c.session.id}`,
          outcome: 'done',
          details: { by: 'directory', from: { role: c.session.role, ...c.session.grant }, to: { role: c.role, ...c.grant } },
        });
      }
      for (const s of confirmed) sessions.verified(s.id, s.role, s.grant, s.expiresAt, now);
      for (const { user, access } of verifiers) {
        if (access?.ok) sessions.setGrant(user.id, access.role, access.grant);
        else sessions.setVerifier(user.id, undefined, now);
      }
      return { endedIds: done, changedIds: changed };
    });
    for (const c of changes)
      this.deps.log.info({ user: c.session.userName, session: c.session.id, from: c.session.role, to: c.role }, 'directory changed a role');
    this.tell(endedIds, ends.map((e) => e.kind).join(', '));
    // A stream opened under the old role or scope closes: the client opens it again under the new one, or is refused.
    if (changedIds.length > 0) this.deps.bus.emit('session.changed', { sessionIds: changedIds });
  }

  /**
   * Ends a session inside the caller's transaction, with its audit entry;
   * false when it had already ended. After the commit, `tell` the bus.
   */
  end(session: Session, kind: EndKind, reason: string, now = new Date()): boolean {
    if (!this.deps.repos.sessions.end(session.id, reason, now)) return false;
    if (kind === 'deprovisioned' || kind === 'deleted' || kind === 'off') this.deps.repos.sessions.setVerifier(session.userId, undefined, now);
    this.deps.repos.audit.add({
      actor: session.userName,
      role: session.role,
      action: 'session.end',
      target: `session ${session.id}`,
      outcome: 'done',
      details: { reason, kind },
    });
    this.ended.inc({ reason: kind });
    if (kind !== 'logout') this.deps.log.info({ user: session.userName, session: session.id, reason }, 'directory session ended');
    return true;
  }

  /** Tells the bus, after the commit, which sessions ended (their streams close). */
  tell(sessionIds: number[], reason: string): void {
    if (sessionIds.length > 0) this.deps.bus.emit('session.ended', { sessionIds, reason });
  }
}
