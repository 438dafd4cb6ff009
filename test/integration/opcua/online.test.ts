import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Device } from '../../../agent/inventory/device.js';
import { upstreamItem } from '../../../agent/sync/record.js';
import { apiUser } from '../../helpers/apiUser.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { startOpcuaServer, type OpcuaServerHandle } from '../../helpers/opcuaServer.js';

interface Job {
  deviceId: string;
  status: string;
  attempts: number;
  reason?: string;
}
type Shown = { device: Device };

/**
 * Online and last seen of OPC UA servers: last seen means the server
 * answered; a discovery run that looks where a server was and does not
 * find it marks it offline, and so does the record sent upstream.
 */
describe('OPC UA servers that stop answering', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let base: string;
  let kept: OpcuaServerHandle;
  let stopped: OpcuaServerHandle;
  let scanned: OpcuaServerHandle;
  const ids: Record<string, string> = {};
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const json = async <T>(...args: string[]) => {
    const r = await cli(...args, '--json');
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  const show = async (id: string): Promise<Device> => {
    const d = (await json<Shown>('devices', 'show', id)).device;
    return { ...d, firstSeen: new Date(d.firstSeen), lastSeen: new Date(d.lastSeen), updatedAt: new Date(d.updatedAt) };
  };
  const discover = async () => {
    const r = await cli('opcua', 'discover', '--json');
    expect(r.code, r.stderr).toBe(0);
  };
  /** A technician's run narrowed to `targets` (through the API, as the console asks for one), followed to its end. */
  const discoverOnly = async (targets: string[]) => {
    const headers = { authorization: `Bearer ${await apiUser(config, 'tech-o', 'technician')}`, 'content-type': 'application/json' };
    const started = await fetch(`${base}/api/v1/discovery/runs`, { method: 'POST', headers, body: JSON.stringify({ protocols: ['opcua'], targets }) });
    expect(started.status, await started.clone().text()).toBe(202);
    const id = ((await started.json()) as { runs: { id: number }[] }).runs[0]!.id;
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { run } = (await (await fetch(`${base}/api/v1/discovery/runs/${id}`, { headers })).json()) as { run: { status: string } };
      if (run.status === 'done') return;
      if (run.status === 'failed' || Date.now() > deadline) throw new Error(`run ${id}: ${run.status}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  /** The revision waiting in the sync outbox for a device (what goes upstream next). */
  const outbox = (id: string) => {
    const db = new Database(join(tmp.dir, 'data', 'edge-agent.db'), { readonly: true });
    try {
      return (db.prepare('SELECT revision FROM sync_outbox WHERE device_id = ?').get(id) as { revision: number } | undefined)?.revision;
    } finally {
      db.close();
    }
  };

  beforeAll(async () => {
    tmp = tempDir();
    [kept, stopped, scanned] = await Promise.all([
      startOpcuaServer({ host: '127.0.0.2', applicationUri: 'urn:plant6:kept-1' }),
      startOpcuaServer({ host: '127.0.0.3', applicationUri: 'urn:plant6:stopped-2' }),
      startOpcuaServer({ host: '127.0.0.4', applicationUri: 'urn:plant6:scanned-3' }),
    ]);
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-online',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'ca:',
        '  rootKeyType: rsa-2048',
        'opcua:',
        `  endpoints: [${kept.endpointUrl}, ${stopped.endpointUrl}]`,
        `  scan: { ranges: [127.0.0.4/32], ports: [${scanned.port}], concurrency: 4, maxAddresses: 16 }`,
        '  timeoutMs: 8000',
        '  push:',
        "    securityAdmins: [{ applicationUri: 'urn:plant6:*', username: secadmin, password: not-used }]",
        '    stepTimeoutMs: 10000',
        '    retryInitialMs: 600000',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    base = await daemon.ready();
    await discover();
    const listed = await json<Device[]>('devices', 'list');
    for (const s of [kept, stopped, scanned])
      ids[s.applicationUri] = listed.find((d) => (d.source.opcua as { applicationUri?: string } | undefined)?.applicationUri === s.applicationUri)!.id;
  }, 120_000);

  afterAll(async () => {
    await daemon?.dispose();
    await Promise.all([kept, stopped, scanned].map((s) => s?.stop()));
    tmp?.cleanup();
  });

  it('keeps last seen where it was through an approval and a push that cannot reach the server', async () => {
    const id = ids[stopped.applicationUri]!;
    const before = await show(id);
    expect(before.online).toBe(true);
    await stopped.stop();
    expect((await cli('devices', 'approve', id)).code).toBe(0);
    const deadline = Date.now() + 30_000;
    let job: Job | undefined;
    while (!(job = (await json<{ jobs: Job[] }>('opcua', 'push-status')).jobs.find((j) => j.deviceId === id && j.status === 'failed'))) {
      if (Date.now() > deadline) throw new Error('the push did not fail in time');
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(job.reason).toMatch(/^connect: /);
    const after = await show(id);
    expect(after.reason).toBe(job.reason);
    expect(after.lastSeen.toISOString()).toBe(before.lastSeen.toISOString());
  }, 180_000);

  it('marks offline only what a run looked for and did not find, keeping last seen, and the upstream record says so', async () => {
    const [stoppedId, scannedId, keptId] = [ids[stopped.applicationUri]!, ids[scanned.applicationUri]!, ids[kept.applicationUri]!];
    await scanned.stop();
    const before = { stopped: await show(stoppedId), scanned: await show(scannedId), kept: await show(keptId) };
    // A run for one target does not look where the others were: they stay as they are.
    await discoverOnly([kept.endpointUrl]);
    expect((await show(stoppedId)).online).toBe(true);
    expect((await show(scannedId)).online).toBe(true);

    await discover();
    for (const [id, was] of [
      [stoppedId, before.stopped],
      [scannedId, before.scanned],
    ] as const) {
      const now = await show(id);
      expect(now, id).toMatchObject({ online: false, revision: was.revision + 1 });
      expect(now.lastSeen.toISOString()).toBe(was.lastSeen.toISOString());
      // What goes upstream: the record at that revision, offline, last seen unchanged.
      expect(outbox(id)).toBe(now.revision);
      const { record } = upstreamItem(now, undefined, {});
      expect(record).toMatchObject({ online: false, lastSeen: was.lastSeen.toISOString() });
    }
    const stillThere = await show(keptId);
    expect(stillThere.online).toBe(true);
    expect(stillThere.lastSeen.getTime()).toBeGreaterThan(before.kept.lastSeen.getTime());
  }, 180_000);
});
