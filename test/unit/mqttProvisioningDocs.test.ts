import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO } from '../helpers/daemon.js';

describe('docs/mqtt-provisioning.md, as a new integrator reads it', () => {
  const docs = readFileSync(join(REPO, 'docs/mqtt-provisioning.md'), 'utf8');
  const protocol = docs.slice(docs.indexOf('\n## The protocol\n'));
  const beforeFirstExample = protocol.slice(0, protocol.indexOf('```'));

  it('states that the client id must equal the device id before any example of the protocol', () => {
    expect(protocol.length).toBeLessThan(docs.length);
    expect(beforeFirstExample).toMatch(/\*\*The client id must equal the device id\.\*\*/);
    // And what a device that gets it wrong sees, on each broker.
    expect(beforeFirstExample).toMatch(/never reaches the agent/);
    expect(beforeFirstExample).toMatch(/0x87/);
  });

  it('states the id rule, "." and ".." excluded, before any example', () => {
    expect(beforeFirstExample).toMatch(/not `\.` or\s+`\.\.`/);
  });
});
