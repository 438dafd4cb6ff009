import { describe, expect, it } from 'vitest';
import { encodeAnswer } from '../../agent/onboarding/answerPayload.js';
import type { Answer } from '../../agent/onboarding/enrollment.js';

const chain = ['-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', '-----BEGIN CERTIFICATE-----\nMIIC"$&$1\\\n-----END CERTIFICATE-----\n'];

describe('encodeAnswer', () => {
  const answers: Answer[] = [
    {
      requestId: 'r-1',
      status: 'issued',
      certificate: '-----BEGIN CERTIFICATE-----\nMIID\n-----END CERTIFICATE-----\n',
      caChain: chain,
      brokerUrl: 'mqtts://gw:8883',
    },
    // A request id holding the placeholder's text, quotes and replacement patterns: escaped, so never taken for it.
    { requestId: '"caChain":0 $& "caChain":0', status: 'issued', certificate: 'x"caChain":0', caChain: chain, brokerUrl: 'mqtts://gw:8883' },
    { requestId: 'r-2', status: 'issued', certificate: 'c', caChain: [] },
    // Characters of two, three and four UTF-8 bytes before the chain: the splice is in characters, the payload in bytes.
    { requestId: 'Pumpe-Süd-€-𝄞', status: 'issued', certificate: 'ü', caChain: chain, brokerUrl: 'mqtts://gw:8883' },
    { requestId: null, status: 'rejected', reason: 'request is not JSON' },
    { requestId: 'r-3', status: 'pending' },
  ];

  it.each(answers.map((a, i) => [i, a] as const))('writes answer %i as JSON.stringify does, byte for byte', (_, answer) => {
    // Twice: the second takes the chain from the cache.
    expect(encodeAnswer(answer).equals(Buffer.from(JSON.stringify(answer)))).toBe(true);
    expect(encodeAnswer(answer).equals(Buffer.from(JSON.stringify(answer)))).toBe(true);
    expect(JSON.parse(encodeAnswer(answer).toString('utf8'))).toEqual(answer);
  });

  it('serialises each chain array as its own: another issuer chain is not answered with the first', () => {
    const other = ['-----BEGIN CERTIFICATE-----\nMIIE\n-----END CERTIFICATE-----\n'];
    expect(encodeAnswer({ requestId: 'a', status: 'issued', certificate: 'c', caChain: chain }).toString()).toContain('MIIC');
    const second = encodeAnswer({ requestId: 'b', status: 'issued', certificate: 'c', caChain: other }).toString();
    expect(second).toContain('MIIE');
    expect(second).not.toContain('MIIC');
  });
});
