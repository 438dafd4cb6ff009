import { randomUUID } from 'node:crypto';
import type { Store } from '../../agent/store/database.js';

/** An upstream event as the report queues it (docs/upstream-api.md, "Events"). */
export interface FindingEvent {
  eventId: string;
  type: 'finding.opened' | 'finding.resolved';
  occurredAt: string;
  finding: {
    id: number;
    kind: string;
    subject: string;
    deviceId: string | null;
    summary: string;
    evidence: Record<string, unknown>;
    firstSeen: string;
    lastSeen: string;
  };
}

let findings = 0;

/** A valid finding.opened event; `finding` overrides some of the finding's fields. */
export function findingEvent(finding: Partial<FindingEvent['finding']> = {}, over: Partial<Omit<FindingEvent, 'finding'>> = {}): FindingEvent {
  const at = new Date().toISOString();
  findings += 1;
  return {
    eventId: randomUUID(),
    type: 'finding.opened',
    occurredAt: at,
    finding: { ...baseFinding(findings, at), ...finding },
    ...over,
  };
}

function baseFinding(n: number, at: string): FindingEvent['finding'] {
  return {
    id: n,
    kind: 'unpatched',
    subject: `opcua:urn:test:press-${n}`,
    deviceId: `opcua:urn.test.press-${n}`,
    summary: 'software 1.2.0 is below the policy minimum 1.4.0',
    evidence: { softwareVersion: '1.2.0', minimum: '1.4.0', source: 'BuildInfo' },
    firstSeen: at,
    lastSeen: at,
  };
}

/**
 * Queues events in report_events as the report does (agent/store/reportRepository.ts, on its own branch):
 * the body is the event's JSON text, sent byte for byte; returns the bodies in the order queued.
 */
export function queueEvents(store: Store, events: FindingEvent[]): string[] {
  const insert = store.statement('INSERT INTO report_events (event_id, type, body, queued_at) VALUES (?, ?, ?, ?)');
  return store.transaction(() =>
    events.map((e) => {
      const body = JSON.stringify(e);
      insert.run(e.eventId, e.type, body, new Date().toISOString());
      return body;
    }),
  );
}
