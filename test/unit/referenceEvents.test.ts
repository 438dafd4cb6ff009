import { describe, expect, it } from 'vitest';
import { badEvent } from '../../scripts/cmms/referenceEvents.js';
import { findingEvent } from '../helpers/reportEvents.js';

/** The reference receiver's check of one event (docs/upstream-api.md, "Events"): what it rejects, and why. */
describe("the reference receiver's check of an event", () => {
  const good = () => findingEvent() as unknown as Record<string, unknown>;
  const withFinding = (patch: Record<string, unknown>) => {
    const e = good();
    return { ...e, finding: { ...(e.finding as object), ...patch } };
  };

  it('takes an event as the contract gives it, with or without a device (a shadow device has none)', () => {
    expect(badEvent(good())).toBeUndefined();
    expect(badEvent(withFinding({ kind: 'shadow.unenrolled_client', deviceId: null }))).toBeUndefined();
    expect(badEvent({ ...good(), type: 'finding.resolved' })).toBeUndefined();
  });

  const cases: [string, () => Record<string, unknown>, RegExp][] = [
    ['an unknown type', () => ({ ...good(), type: 'finding.updated' }), /^type must be one of/],
    ['a field the contract does not have', () => ({ ...good(), severity: 'high' }), /^unknown field severity$/],
    ['occurredAt that is not a date-time', () => ({ ...good(), occurredAt: 'yesterday' }), /^occurredAt must be/],
    ['no finding', () => ({ ...good(), finding: 'unpatched' }), /^finding must be an object$/],
    ['an unknown kind', () => withFinding({ kind: 'made_up_kind' }), /^finding.kind must be one of shadow.unenrolled_client, /],
    [
      'a finding field missing',
      () => {
        const { evidence: _, ...finding } = good().finding as Record<string, unknown>;
        return { ...good(), finding };
      },
      /^finding.evidence is required$/,
    ],
    ['a finding id that is not a positive integer', () => withFinding({ id: '12' }), /^finding.id must be a positive integer$/],
    ['an empty subject', () => withFinding({ subject: '' }), /^finding.subject/],
    ['a deviceId that is neither a string nor null', () => withFinding({ deviceId: 7 }), /^finding.deviceId/],
    ['evidence that is not an object', () => withFinding({ evidence: ['a'] }), /^finding.evidence must be an object$/],
    ['lastSeen that is not a date-time', () => withFinding({ lastSeen: 12 }), /^finding.firstSeen and finding.lastSeen/],
    ['an unknown finding field', () => withFinding({ workOrder: 'WO-1' }), /^unknown field finding.workOrder$/],
  ];
  it.each(cases)('rejects %s, saying why', (_, make, reason) => {
    expect(badEvent(make())).toMatch(reason);
  });
});
