import type { Logger } from './log.js';

/** Facts the agent's parts tell each other. Anything that needs an answer is a method call instead. */
export interface AgentEvents {
  'certificate.issued': { serial: string; profile: string; identity: string; notAfter: Date };
  'certificate.revoked': { serial: string; profile: string; identity: string; reason: string };
  /** A valid certificate passed two thirds of its lifetime: time to renew. */
  'certificate.expiring': { serial: string; profile: string; identity: string; notAfter: Date };
  /** An OPC UA push attempt ended: done, failed (retried), unsupported or stopped. */
  'opcua.push': { deviceId: string; status: string; serial?: string; reason?: string };
  /** A technician asked for a sync or a reconciliation, recorded in sync_state first: the sync looks at once. */
  'sync.requested': { what: 'now' | 'reconcile' };
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

type Handler<T> = (payload: T) => void;

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
    for (const [event, list] of this.listeners) this.listeners.set(event, list.filter((l) => l.owner !== owner));
  }

  emit<K extends keyof AgentEvents>(event: K, payload: AgentEvents[K]): void {
    for (const { owner, handler } of this.listeners.get(event) ?? []) {
      try {
        (handler as Handler<AgentEvents[K]>)(payload);
      } catch (err) {
        this.log.error({ err, event, owner }, 'event listener failed');
      }
    }
  }
}
