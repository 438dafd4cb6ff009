import type { Logger } from './log.js';

/** Facts the agent's parts tell each other. Anything that needs an answer is a method call instead. */
export interface AgentEvents {
  /**
   * A device's record changed, and the change is committed: told by the
   * device repository through Store.afterCommit, whoever in the daemon made
   * it. Its sync outbox row was written in the same transaction (the
   * triggers of migration 0006), so a listener that reads the outbox now
   * finds it. A reason to look, not the change itself: read the tables.
   */
  'device.changed': { deviceId: string };
  /** A technician's decision is committed to device_actions: the protocol's worker carries it out at once. */
  'action.queued': { actionId: number; deviceId: string };
  /** A queued decision was carried out (or refused), and its outcome recorded in device_actions. */
  'action.done': { actionId: number; deviceId: string; outcome: string };
  /** Recorded in the certificates table, in the same commit as what the issuance changed (the request, the device). */
  'certificate.issued': { serial: string; profile: string; identity: string; notAfter: Date };
  'certificate.revoked': { serial: string; profile: string; identity: string; reason: string };
  /** A valid certificate passed two thirds of its lifetime: time to renew. */
  'certificate.expiring': { serial: string; profile: string; identity: string; notAfter: Date };
  /** An OPC UA push attempt ended: done, failed (retried), unsupported or stopped. */
  'opcua.push': { deviceId: string; status: string; serial?: string; reason?: string };
  /**
   * Upstream events (report findings) were committed to report_events, the
   * events' outbox (migration 0014): told after the commit, the sync sends
   * them at once rather than at its next look (sync.idleMs).
   */
  'report.eventsQueued': { count: number };
  /** A technician asked for a sync or a reconciliation, recorded in sync_state first: the sync looks at once. */
  'sync.requested': { what: 'now' | 'reconcile' };
  /** Directory sessions ended (logout, expiry, the directory took the access away): their open streams close. */
  'session.ended': { sessionIds: number[]; reason: string };
  /** The directory changed the role or scope of these sessions: streams opened under the old one close. */
  'session.changed': { sessionIds: number[] };
  /** A discovery run moved on: the technician interface shows it. */
  'discovery.progress': {
    runId: number;
    protocol: 'opcua' | 'mqtt';
    phase: 'listing' | 'scanning' | 'probing' | 'done' | 'failed' | 'cancelled';
    total: number;
    done: number;
    found: number;
    errors: number;
    /** While scanning: addresses and ports tried so far, of how many. */
    scanned?: { done: number; total: number };
  };
}

/** A handler may be async: a promise it returns that rejects is logged like a throw. */
type Handler<T> = (payload: T) => unknown;

/**
 * A typed event bus. Listeners are registered per owner and removed together;
 * a listener that throws is logged and never disturbs the emitter or the
 * other listeners.
 */
export class EventBus {
  private readonly listeners = new Map<keyof AgentEvents, { owner: string; handler: Handler<never> }[]>();

  constructor(private readonly log: Logger) {}

  on<K extends keyof AgentEvents>(event: K, owner: string, handler: Handler<AgentEvents[K]>): void {
    const list = this.listeners.get(event) ?? [];
    list.push({ owner, handler: handler as Handler<never> });
    this.listeners.set(event, list);
  }

  off(owner: string): void {
    for (const [event, list] of this.listeners)
      this.listeners.set(
        event,
        list.filter((l) => l.owner !== owner),
      );
  }

  emit<K extends keyof AgentEvents>(event: K, payload: AgentEvents[K]): void {
    for (const { owner, handler } of this.listeners.get(event) ?? []) {
      const failed = (err: unknown) => this.log.error({ err, event, owner }, 'event listener failed');
      try {
        const done = (handler as Handler<AgentEvents[K]>)(payload);
        if (done instanceof Promise) done.catch(failed);
      } catch (err) {
        failed(err);
      }
    }
  }
}
