import { readFileSync, writeFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Daemon, tempDir, writeConfig } from '../helpers/daemon.js';
import { NotifyCapture } from '../helpers/notifySocket.js';

/** Reads one sample of a metric from the Prometheus text. */
async function metric(base: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('SIGHUP reload', () => {
  let tmp: ReturnType<typeof tempDir>;
  let notify: NotifyCapture;
  let daemon: Daemon;
  let file: string;
  let base: string;

  beforeEach(async () => {
    tmp = tempDir();
    notify = await NotifyCapture.start(tmp.dir);
    file = writeConfig(tmp.dir);
    daemon = Daemon.start(file, { env: { NOTIFY_SOCKET: notify.path } });
    base = await daemon.ready();
    await notify.waitFor((n) => n.fields.READY === '1');
  });
  afterEach(async () => {
    await daemon.dispose();
    await notify.close();
    tmp.cleanup();
  });

  /** Sends SIGHUP and waits for the READY=1 that ends the reload. */
  async function hangup(): Promise<void> {
    const from = notify.messages.length;
    daemon.kill('SIGHUP');
    const reloading = await notify.waitFor((n) => n.fields.RELOADING === '1', 10_000, from);
    expect(reloading.fields.MONOTONIC_USEC).toMatch(/^\d+$/);
    await notify.waitFor((n) => n.fields.READY === '1', 10_000, notify.messages.indexOf(reloading));
  }

  it('applies a live change: the log level goes from info to debug and debug lines appear', async () => {
    expect(daemon.logs.some((l) => l.level === 'debug')).toBe(false);
    writeFileSync(file, readFileSync(file, 'utf8') + 'log:\n  level: debug\n');
    await hangup();
    const applied = await daemon.waitForLog((l) => l.msg === 'configuration reloaded');
    expect(applied.changed).toEqual(['log.level']);
    // The heartbeat logs at debug every 200 ms.
    await daemon.waitForLog((l) => l.level === 'debug' && l.msg === 'heartbeat', 5_000);
    expect(await metric(base, 'edge_agent_config_reloads_total', 'result="applied"')).toBe(1);
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('keeps the running configuration when the new file is invalid, and keeps serving', async () => {
    writeFileSync(file, readFileSync(file, 'utf8') + 'log:\n  level: loud\n  colour: true\n');
    await hangup();
    const refused = await daemon.waitForLog((l) => l.msg.startsWith('reload refused: configuration invalid'));
    const problems = refused.problems as { path: string }[];
    expect(problems.map((p) => p.path).sort()).toEqual(['log.colour', 'log.level']);
    expect(await metric(base, 'edge_agent_config_reloads_total', 'result="invalid"')).toBe(1);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    // Still at info: no debug line even after several heartbeats.
    await new Promise((r) => setTimeout(r, 500));
    expect(daemon.logs.some((l) => l.level === 'debug')).toBe(false);
    expect(daemon.child.exitCode).toBeNull();
  });

  it('refuses a change that needs a restart (database path, listener port) and keeps running on the old values', async () => {
    const text = readFileSync(file, 'utf8').replace('port: 0', 'port: 1');
    writeFileSync(file, `${text}store:\n  path: ${tmp.dir}/other.db\nlog:\n  level: debug\n`);
    await hangup();
    const refused = await daemon.waitForLog((l) => l.msg.startsWith('reload refused: these keys only change with a restart'));
    expect((refused.restartOnly as string[]).sort()).toEqual(['http.port', 'store.path']);
    expect(await metric(base, 'edge_agent_config_reloads_total', 'result="restart_required"')).toBe(1);
    // Nothing of the refused file was applied, not even the live-changeable log level.
    await new Promise((r) => setTimeout(r, 500));
    expect(daemon.logs.some((l) => l.level === 'debug')).toBe(false);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
