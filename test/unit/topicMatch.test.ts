import { describe, expect, it } from 'vitest';
import { topicMatches } from '../../agent/transport/externalBroker.js';

/** The rule as MQTT 5 (4.7) states it, level by level on split strings: what the in-place matcher must agree with. */
function reference(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

describe('topicMatches', () => {
  it('matches the enrollment filter and nothing beside it', () => {
    expect(topicMatches('edge/enroll/+/request', 'edge/enroll/pump-7/request')).toBe(true);
    expect(topicMatches('edge/enroll/+/request', 'edge/enroll/pump-7/response')).toBe(false);
    expect(topicMatches('edge/enroll/+/request', 'edge/enroll/pump-7/request/x')).toBe(false);
    expect(topicMatches('edge/enroll/+/request', 'edge/enroll//request')).toBe(true);
    expect(topicMatches('edge/enroll/+/request', 'edge/enrol/pump-7/request')).toBe(false);
    expect(topicMatches('edge/#', 'edge')).toBe(true);
    expect(topicMatches('edge/#', 'edgeX/a')).toBe(false);
    expect(topicMatches('#', '')).toBe(true);
    expect(topicMatches('+', '')).toBe(true);
    expect(topicMatches('+', '/')).toBe(false);
    expect(topicMatches('a/b', 'a/bc')).toBe(false);
    expect(topicMatches('a/bc', 'a/b')).toBe(false);
  });

  it('agrees with the split-based rule on every pair of short filters and topics', () => {
    // Every string of up to four characters over the alphabet below: levels, empty levels, wildcards.
    const alphabet = ['a', 'b', '/', '+', '#'];
    const strings = [''];
    for (let len = 1, layer = ['']; len <= 4; len++) {
      layer = layer.flatMap((s) => alphabet.map((c) => s + c));
      strings.push(...layer);
    }
    const topics = strings.filter((s) => !s.includes('+') && !s.includes('#'));
    let compared = 0;
    for (const filter of strings) {
      for (const topic of topics) {
        if (topicMatches(filter, topic) !== reference(filter, topic)) throw new Error(`${JSON.stringify(filter)} against ${JSON.stringify(topic)}`);
        compared += 1;
      }
    }
    expect(compared).toBe(strings.length * topics.length);
  });
});
