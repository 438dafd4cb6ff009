import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, REPO, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';

interface Target {
  target: string;
  source: string;
  status: string;
  detail?: string;
  deviceId?: string;
}

const NS = `edge-mdns-${process.pid}`;
const ip = (...args: string[]) => spawnSync('ip', args, { encoding: 'utf8' });

/**
 * Multicast must not leave this machine, so the test makes a network
 * namespace whose only interface is loopback (multicast on, 224.0.0.0/4
 * routed to it) and runs node-opcua's LDS-ME, the servers it announces and
 * the daemon inside it.
 */
function makeNamespace(): void {
  for (const args of [
    ['netns', 'add', NS],
    ['-n', NS, 'link', 'set', 'lo', 'up'],
    ['-n', NS, 'link', 'set', 'lo', 'multicast', 'on'],
    ['-n', NS, 'route', 'add', '224.0.0.0/4', 'dev', 'lo'],
  ]) {
    const r = ip(...args);
    if (r.status !== 0) throw new Error(`ip ${args.join(' ')} failed: ${r.stderr.trim() || r.error?.message}`);
  }
}

const root = process.getuid?.() === 0;
if (!root) process.stderr.write('mdns.test.ts skipped: making a network namespace needs root (CI runs as root, where it must run)\n');

// Skipped only for a developer who runs the suite without root: creating a network namespace needs
// CAP_SYS_ADMIN, and multicast outside one would leave the machine. As root (CI) it always runs, and a
// namespace that cannot be made fails it. test/unit/mdns.test.ts covers the parsing with packets recorded here either way.
describe.skipIf(!root)('OPC UA discovery over mDNS, in a network namespace of its own', () => {
  let tmp: ReturnType<typeof tempDir>;
  let scene: ChildProcess;
  let servers: { endpointUrl: string; applicationUri: string; certificateThumbprint: string }[];
  let daemon: Daemon;
  let targets: Target[];
  let config: string;

  beforeAll(async () => {
    makeNamespace();
    tmp = tempDir();
    // node-opcua's LDS-ME on 127.0.0.1:4840 announces the two servers that register with it.
    scene = spawn('ip', ['netns', 'exec', NS, process.execPath, join(REPO, 'dist/scripts/simulate/opcuaMdnsScene.js'), '127.0.0.2', '127.0.0.9'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    scene.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    servers = await new Promise((resolve, reject) => {
      let out = '';
      scene.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        // node-opcua prints its warnings on stdout too: the scene's answer is the line that is a JSON object.
        const line = out.split('\n').find((l) => l.startsWith('{"lds"') && l.endsWith('}'));
        if (line) resolve((JSON.parse(line) as { servers: typeof servers }).servers);
      });
      scene.once('exit', (code) => reject(new Error(`the mDNS scene exited (${code}): ${stderr.slice(-2000)}`)));
    });
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-mdns',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        // The range admits 127.0.0.2 only; port 9 has nothing listening, so the scan itself finds nothing.
        '  scan: { ranges: [127.0.0.2/32], ports: [9] }',
        '  timeoutMs: 3000',
        '  mdns: { enabled: true, listenMs: 1500 }',
        '',
      ].join('\n'),
    );
    daemon = Daemon.start(config, { prefix: ['ip', 'netns', 'exec', NS] });
    await daemon.ready();
    const run = await runCli(['opcua', 'discover', '--json', '--config', config]);
    expect(run.code, run.stderr).toBe(0);
    targets = (JSON.parse(run.stdout) as { targets: Target[] }).targets;
  }, 120_000);

  afterAll(async () => {
    await daemon?.dispose();
    if (scene && scene.exitCode === null) {
      scene.kill('SIGTERM');
      await new Promise((r) => scene.once('exit', r));
    }
    ip('netns', 'del', NS);
    tmp?.cleanup();
  });

  it('finds a server announced over mDNS and records it, with its certificate', async () => {
    const inside = servers[0]!;
    expect(targets.find((t) => t.target === inside.endpointUrl)).toMatchObject({ source: 'mdns', status: 'found' });
    const id = targets.find((t) => t.target === inside.endpointUrl)!.deviceId!;
    const shown = JSON.parse((await runCli(['devices', 'show', id, '--json', '--config', config])).stdout) as {
      device: { state: string; source: { opcua: { applicationUri: string; certificateThumbprint: string } } };
    };
    expect(shown.device.state).toBe('discovered');
    expect(shown.device.source.opcua).toMatchObject({ applicationUri: inside.applicationUri, certificateThumbprint: inside.certificateThumbprint });
  });

  it('does not contact an announced server outside the ranges, nor take the LDS for a server', () => {
    const outside = servers[1]!;
    expect(targets.find((t) => t.target === outside.endpointUrl)).toMatchObject({
      source: 'mdns',
      status: 'skipped',
      detail: expect.stringMatching(/outside opcua.scan.ranges/),
    });
    expect(
      targets
        .filter((t) => t.source === 'mdns')
        .map((t) => t.target)
        .sort(),
    ).toEqual(servers.map((s) => s.endpointUrl).sort());
    expect(targets.filter((t) => t.status === 'found')).toHaveLength(1);
  });
});
