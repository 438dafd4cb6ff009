import { userInfo } from 'node:os';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { certText, openssl } from '../../helpers/openssl.js';
import {
  SAMPLE_PUMP as PUMP,
  startGarbageServer,
  startHangingServer,
  startLds,
  startOpcuaServer,
  type LdsHandle,
  type OpcuaServerHandle,
  type RawTcpServer,
} from '../../helpers/opcuaServer.js';

interface Target {
  target: string;
  source: string;
  status: string;
  detail?: string;
  deviceId?: string;
}
interface Shown {
  device: { id: string; state: string; online: boolean; nameplate: Record<string, string>; source: { opcua?: Record<string, unknown> } };
}

describe('OPC UA discovery by the daemon (real node-opcua servers, LDS and range scan on loopback)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let lds: LdsHandle;
  let plc: OpcuaServerHandle;
  let secure: OpcuaServerHandle;
  let outside: OpcuaServerHandle;
  let hanging: RawTcpServer;
  let garbage: RawTcpServer;
  let targets: Target[];
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const show = async (id: string) => JSON.parse((await cli('devices', 'show', id, '--json')).stdout) as Shown;

  beforeAll(async () => {
    tmp = tempDir();
    lds = await startLds();
    [plc, secure, outside, hanging, garbage] = await Promise.all([
      startOpcuaServer({
        host: '127.0.0.2',
        applicationUri: 'urn:plant1:press-7',
        applicationName: 'Press 7',
        buildInfo: { manufacturerName: 'ACME Automation', productName: 'ACME S9 PLC', softwareVersion: '9.4.1' },
        deviceSet: [PUMP],
        registerWith: lds,
      }),
      startOpcuaServer({ host: '127.0.0.3', applicationUri: 'urn:plant1:mixer-2', securityModes: 'secure' }),
      // Listed by the LDS, but outside the ranges: the agent must not contact it.
      startOpcuaServer({ host: '127.0.0.9', applicationUri: 'urn:elsewhere:server', registerWith: lds }),
      startHangingServer('127.0.0.4'),
      startGarbageServer('127.0.0.4'),
    ]);
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-ua',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'opcua:',
        `  endpoints: [${plc.endpointUrl}, ${hanging.endpointUrl}]`,
        `  discoveryServers: [${lds.endpointUrl}]`,
        `  scan: { ranges: [127.0.0.2/31, 127.0.0.4/32], ports: [${secure.port}, ${garbage.port}], concurrency: 8, maxAddresses: 16 }`,
        '  timeoutMs: 2000',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config);
    await daemon.ready();
    const run = await cli('opcua', 'discover', '--actor', 'tech-c', '--json');
    expect(run.code, run.stderr).toBe(0);
    const body = JSON.parse(run.stdout) as { run: { status: string; trigger: string; actor: string }; targets: Target[] };
    // --actor is a label beside the real login, never instead of it (issue 13, item 11).
    expect(body.run).toMatchObject({ status: 'done', trigger: 'technician', actor: `tech-c (entered by ${userInfo().username})` });
    targets = body.targets;
  }, 120_000);
  afterAll(async () => {
    await daemon?.dispose();
    await Promise.all([plc, secure, outside, hanging, garbage].map((s) => s?.stop()));
    await lds?.stop();
    tmp?.cleanup();
  });

  const target = (url: string) => targets.find((t) => t.target === url);

  it('finds a configured server and reads its endpoints, certificate, BuildInfo and DI DeviceSet', async () => {
    expect(target(plc.endpointUrl)).toMatchObject({ source: 'endpoint', status: 'found' });
    const { device } = await show(target(plc.endpointUrl)!.deviceId!);
    expect(device).toMatchObject({
      state: 'discovered',
      online: true,
      nameplate: {
        manufacturer: 'ACME Pumps',
        model: 'CP-300',
        serialNumber: 'SN-0042',
        hardwareRevision: 'HW-B',
        firmwareVersion: '4.1.2',
        displayName: 'Press 7',
      },
    });
    expect(device.source.opcua).toMatchObject({
      applicationUri: 'urn:plant1:press-7',
      certificateThumbprint: plc.certificateThumbprint,
      buildInfo: { manufacturerName: 'ACME Automation', productName: 'ACME S9 PLC', softwareVersion: '9.4.1' },
      deviceSet: [
        expect.objectContaining({
          serialNumber: 'SN-0042',
          deviceRevision: 'R3',
          productInstanceUri: 'urn:acme:pumps:cp-300:sn-0042',
          assetId: 'PLANT1-P-007',
        }),
      ],
    });
    expect(device.source.opcua?.security).toContain('None/None');
  });

  it('finds a server by scanning the ranges, and says why its nameplate waits when it offers only secure sessions', async () => {
    const found = target(`opc.tcp://127.0.0.3:${secure.port}`);
    expect(found).toMatchObject({ source: 'scan', status: 'found', detail: expect.stringMatching(/no anonymous session without security/) });
    const { device } = await show(found!.deviceId!);
    expect(device.source.opcua).toMatchObject({ applicationUri: 'urn:plant1:mixer-2', certificateThumbprint: secure.certificateThumbprint });
    expect(device.source.opcua?.security).toEqual(expect.arrayContaining(['SignAndEncrypt/Basic256Sha256']));
    expect(device.source.opcua?.security).not.toContain('None/None');
  });

  it('does not contact a server an LDS lists outside the configured ranges', async () => {
    const skipped = targets.filter((t) => t.source === 'lds' && t.status === 'skipped').map((t) => t.target);
    // Only the server on 127.0.0.9: the LDS's listing of itself (a DiscoveryServer) is no target at all.
    expect(skipped).toEqual([outside.endpointUrl]);
    // The same counter that shows the agent talked to the configured server shows it never reached this one.
    expect(plc.bytesRead).toBeGreaterThan(0);
    expect(outside.bytesRead).toBe(0);
    const listed = JSON.parse((await cli('devices', 'list', '--json')).stdout) as { id: string }[];
    expect(listed.map((d) => d.id).filter((id) => id.startsWith('opcua:'))).toHaveLength(2);
  });

  it('gives a hung server and a port that speaks garbage only their own timeout, and records why', async () => {
    expect(hanging.connections).toBeGreaterThan(0);
    // The agent gave up on it and closed its connection: nothing is left open for the next run to pile onto.
    await waitUntil(() => hanging.open === 0);
    expect(target(hanging.endpointUrl)).toMatchObject({ source: 'endpoint', status: 'error' });
    expect(target(`opc.tcp://127.0.0.4:${garbage.port}`)).toMatchObject({ source: 'scan', status: 'nothing' });
    const runs = JSON.parse((await cli('opcua', 'runs', '--json')).stdout) as { found: number; errors: number; targetsDone: number; targetsTotal: number }[];
    expect(runs[0]).toMatchObject({ found: 2, errors: 1 });
    expect(runs[0]!.targetsDone).toBe(runs[0]!.targetsTotal);
  });

  it("exports a key, a certificate for the server's applicationUri and address, and the chain, to install by hand", async () => {
    const id = target(plc.endpointUrl)!.deviceId!;
    const out = join(tmp.dir, 'bundle');
    const r = await cli('opcua', 'export-bundle', '--id', id, '--out', out, '--actor', 'tech-c', '--json');
    expect(r.code, r.stderr).toBe(0);
    const verify = await openssl(['verify', '-CAfile', join(out, 'chain.pem'), '-purpose', 'sslserver', join(out, 'cert.pem')], tmp.dir);
    expect(verify.stdout, verify.stderr).toContain('OK');
    const text = await certText(tmp.dir, join(out, 'cert.pem'));
    expect(text).toContain('URI:urn:plant1:press-7');
    expect(text).toContain('IP Address:127.0.0.2');
    const der = await openssl(['x509', '-inform', 'DER', '-in', join(out, 'cert.der'), '-noout', '-serial'], tmp.dir);
    expect(der.stdout.trim().toLowerCase()).toBe(`serial=${(JSON.parse(r.stdout) as { serial: string }).serial}`);
    expect(statSync(join(out, 'key.pem')).mode & 0o777).toBe(0o600);
    const history = JSON.parse((await cli('devices', 'show', id, '--json')).stdout) as { history: { cause: string }[] };
    expect(history.history.at(-1)?.cause).toBe(
      `certificate ${(JSON.parse(r.stdout) as { serial: string }).serial} exported by tech-c (entered by ${userInfo().username}) for installation by hand`,
    );
    // A private key left the gateway: in the audit log under the real login.
    const audit = JSON.parse((await cli('audit', '--json')).stdout) as { actor: string; action: string; target: string; details: { by: string } }[];
    expect(audit.find((a) => a.action === 'opcua.exportBundle' && a.target === id)).toMatchObject({
      actor: `local:${userInfo().username}`,
      details: { by: `tech-c (entered by ${userInfo().username})` },
    });
    const again = await cli('opcua', 'export-bundle', '--id', id, '--out', out);
    expect(again.code).toBe(64);
    expect(again.stderr).toMatch(/is not empty; choose a new directory/);
  });

  it('updates the same record on a second run instead of adding one, without a history entry when nothing changed', async () => {
    const before = JSON.parse((await cli('devices', 'list', '--json')).stdout) as { id: string; revision: number }[];
    const again = await cli('opcua', 'discover', '--json');
    expect(again.code, again.stderr).toBe(0);
    const after = JSON.parse((await cli('devices', 'list', '--json')).stdout) as { id: string; revision: number }[];
    expect(after.filter((d) => d.id.startsWith('opcua:'))).toHaveLength(2);
    const mixer = target(`opc.tcp://127.0.0.3:${secure.port}`)!.deviceId!;
    expect(after.find((d) => d.id === mixer)?.revision).toBe(before.find((d) => d.id === mixer)?.revision);
  });
});

async function waitUntil(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
