import type { Answer } from './enrollment.js';

/** The CA chain as JSON, once per chain: every certificate of an issuer is answered with the same chain (its array is the issuer's own). */
const chains = new WeakMap<readonly string[], Buffer>();
const PLACEHOLDER = '"caChain":0';

/**
 * An answer as the JSON bytes a device reads: the same bytes as
 * `JSON.stringify(answer)` (same keys, same order), without serialising the
 * CA chain (its PEMs are most of an issued answer) for every certificate.
 */
export function encodeAnswer(answer: Answer): Buffer {
  const { caChain } = answer;
  if (caChain === undefined) return Buffer.from(JSON.stringify(answer));
  let chain = chains.get(caChain);
  if (chain === undefined) chains.set(caChain, (chain = Buffer.from(JSON.stringify(caChain))));
  // A number in the chain's place keeps the key order; no string value can hold it (its quotes would be escaped).
  const text = JSON.stringify({ ...answer, caChain: 0 });
  const at = text.indexOf(PLACEHOLDER) + PLACEHOLDER.length - 1;
  return Buffer.concat([Buffer.from(text.slice(0, at)), chain, Buffer.from(text.slice(at + 1))]);
}
