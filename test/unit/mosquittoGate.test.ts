import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Metrics } from '../../agent/metrics.js';
import { MosquittoGate } from '../../agent/transport/mosquittoGate.js';

describe('MosquittoGate when Mosquitto cannot be told to reload', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('tries again at the next refresh, and still takes the cut-off client id over once the reload succeeds', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gate-'));
    dirs.push(dir);
    const crlFile = join(dir, 'ca-crl.pem');
    writeFileSync(crlFile, 'CRL 1\n');
    // A real command through /bin/sh: it fails while the flag file says so.
    const flag = join(dir, 'broken');
    writeFileSync(flag, '');
    const options = { dir, pidFile: '', reloadCommand: `test ! -e '${flag}'`, agentId: 'gw', topicPrefix: 'provisioning', crlFile };
    const takenOver: string[] = [];
    const gate = new MosquittoGate({
      log: pino({ level: 'silent' }),
      metrics: new Metrics(),
      options: () => options,
      cutOffIdentities: () => ['pump-5'],
      takeOver: async (id) => void takenOver.push(id),
    });

    await expect(gate.cutOff('pump-5')).rejects.toThrow(/failed/);
    // The files are written whatever Mosquitto does: a restart or a later reload picks them up.
    expect(readFileSync(join(dir, 'acl-devices'), 'utf8')).toContain('pump-5');
    expect(readFileSync(join(dir, 'crl.pem'), 'utf8')).toBe('CRL 1\n');
    expect(takenOver).toEqual([]);

    // Mosquitto back (the same CRL, nothing new revoked): the periodic refresh repeats the reload and the takeover.
    rmSync(flag);
    await gate.refresh();
    expect(takenOver).toEqual(['pump-5']);
    // Once told, nothing more until something changes.
    await gate.refresh();
    expect(takenOver).toEqual(['pump-5']);
  });

  it('at start takes over only the client ids of devices cut off while the agent was down', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gate-'));
    dirs.push(dir);
    const crlFile = join(dir, 'ca-crl.pem');
    writeFileSync(crlFile, 'CRL 1\n');
    const options = { dir, pidFile: '', reloadCommand: 'true', agentId: 'gw', topicPrefix: 'provisioning', crlFile };
    let cutOff = ['pump-5'];
    const takenOver: string[] = [];
    const gate = () =>
      new MosquittoGate({
        log: pino({ level: 'silent' }),
        metrics: new Metrics(),
        options: () => options,
        cutOffIdentities: () => cutOff,
        takeOver: async (id) => void takenOver.push(id),
      });
    await gate().cutOff('pump-5');
    expect(takenOver).toEqual(['pump-5']);
    // The agent stops; pump-6 is revoked beside it (edge-agent ca revoke); the agent starts again.
    cutOff = ['pump-5', 'pump-6'];
    await gate().sync();
    expect(takenOver).toEqual(['pump-5', 'pump-6']);
    expect(readFileSync(join(dir, 'acl-devices'), 'utf8')).toMatch(/^user pump-6\ntopic deny #$/m);
    // A start with nothing new takes nothing over.
    await gate().sync();
    expect(takenOver).toEqual(['pump-5', 'pump-6']);
  });
});
