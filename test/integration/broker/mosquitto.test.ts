import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempDir } from '../../helpers/daemon.js';
import { freePort, Mosquitto, publish, subscribe } from '../../helpers/mosquitto.js';
import { openssl, opensslCsr } from '../../helpers/openssl.js';

describe('a real Mosquitto 2 configured by edge-agent broker mosquitto-config', () => {
  let tmp: ReturnType<typeof tempDir>;
  let config: string;
  let broker: Mosquitto;
  let ports: { provisioning: number; mtls: number };
  const dir = () => join(tmp.dir, 'broker');
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const ca = () => ({ cafile: join(dir(), 'ca.pem') });
  const agent = () => ({ ...ca(), cert: join(tmp.dir, 'agent', 'cert.pem'), key: join(tmp.dir, 'agent', 'key.pem') });
  const device = (name: string) => ({ ...ca(), cert: join(tmp.dir, `${name}.pem`), key: join(tmp.dir, `${name}.key`) });

  async function enroll(name: string): Promise<string> {
    await opensslCsr(tmp.dir, name, 'ec-p256');
    const issued = await cli(
      'ca',
      'issue',
      '--profile',
      'mqtt-device',
      '--id',
      name,
      '--csr',
      join(tmp.dir, `${name}.csr`),
      '--out',
      join(tmp.dir, `${name}.pem`),
      '--json',
    );
    expect(issued.code, issued.stderr).toBe(0);
    return (JSON.parse(issued.stdout) as { serial: string }).serial;
  }

  beforeAll(async () => {
    tmp = tempDir();
    config = join(tmp.dir, 'agent.yaml');
    writeFileSync(config, `agent:\n  id: gw-mq\n  dataDir: ${join(tmp.dir, 'data')}\nca:\n  crlFile: ${join(tmp.dir, 'broker', 'crl.pem')}\n`);
    expect((await cli('ca', 'init')).code).toBe(0);
    ports = { provisioning: await freePort(), mtls: await freePort() };
    const written = await cli(
      'broker',
      'mosquitto-config',
      '--out',
      dir(),
      '--provisioning-port',
      String(ports.provisioning),
      '--mtls-port',
      String(ports.mtls),
      '--json',
    );
    expect(written.code, written.stderr).toBe(0);
    expect(JSON.parse(written.stdout)).toMatchObject({ crlKeptCurrent: true });
    const agentKey = await cli('ca', 'issue', '--profile', 'agent-client', '--id', 'gw-mq', '--generate-key', '--out', join(tmp.dir, 'agent'));
    expect(agentKey.code, agentKey.stderr).toBe(0);
    broker = await Mosquitto.start(join(dir(), 'mosquitto.conf'), dir(), [tmp.dir]);
  }, 60_000);
  afterAll(async () => {
    await broker?.stop();
    tmp.cleanup();
  });

  it('presents a broker certificate that openssl verifies against the CA file it wrote', async () => {
    const verify = await openssl(['verify', '-CAfile', join(dir(), 'ca.pem'), '-purpose', 'sslserver', join(dir(), 'server.crt')], tmp.dir);
    expect(verify.stdout.trim(), verify.stderr).toBe(`${join(dir(), 'server.crt')}: OK`);
  });

  it('lets an enrolled device in on the mutual-TLS listener, and the agent sees what it publishes', async () => {
    await enroll('sensor-1');
    const sub = subscribe(ports.mtls, agent(), 'devices/#', { seconds: 10 });
    await sub.ready;
    const pub = await publish(ports.mtls, device('sensor-1'), 'devices/sensor-1/temperature', '21.5');
    expect(pub.code, pub.output).toBe(0);
    expect(await sub.done).toEqual(['devices/sensor-1/temperature 21.5']);
  });

  it('refuses a client without a certificate, and one whose certificate comes from another CA', async () => {
    const none = await publish(ports.mtls, ca(), 'devices/x/y', 'no');
    expect(none.code).not.toBe(0);
    const made = await openssl(
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        'rogue.key',
        '-subj',
        '/CN=sensor-1',
        '-days',
        '2',
        '-out',
        'rogue.pem',
      ],
      tmp.dir,
    );
    expect(made.ok).toBe(true);
    const since = broker.mark();
    const rogue = await publish(ports.mtls, device('rogue'), 'devices/sensor-1/temperature', '99');
    expect(rogue.code).not.toBe(0);
    // Mosquitto may write its line after the client gave up: wait for it.
    await broker.waitForLog(/certificate verify failed|unknown ca/i, { since });
  });

  it("keeps a device out of another device's topics: only its own message arrives", async () => {
    await enroll('sensor-2');
    const sub = subscribe(ports.mtls, agent(), 'devices/#', { seconds: 10 });
    await sub.ready;
    expect((await publish(ports.mtls, device('sensor-2'), 'devices/sensor-1/temperature', 'forged')).code).toBe(0);
    expect((await publish(ports.mtls, device('sensor-2'), 'devices/sensor-2/temperature', 'own')).code).toBe(0);
    expect(await sub.done).toEqual(['devices/sensor-2/temperature own']);
  });

  it('lets a client on the provisioning listener write only its own request and read only its own response', async () => {
    const requests = subscribe(ports.mtls, agent(), 'edge/prov/v1/+/request', { seconds: 10 });
    await requests.ready;
    expect((await publish(ports.provisioning, ca(), 'edge/prov/v1/sensor-8/request', 'forged', 'sensor-9')).code).toBe(0);
    expect((await publish(ports.provisioning, ca(), 'edge/prov/v1/sensor-9/request', 'mine', 'sensor-9')).code).toBe(0);
    expect(await requests.done).toEqual(['edge/prov/v1/sensor-9/request mine']);

    const own = subscribe(ports.provisioning, ca(), 'edge/prov/v1/sensor-9/response', { seconds: 5, clientId: 'sensor-9' });
    const eavesdropper = subscribe(ports.provisioning, ca(), 'edge/prov/v1/sensor-9/response', { seconds: 3, clientId: 'sensor-8' });
    await Promise.all([own.ready, eavesdropper.ready]);
    expect((await publish(ports.mtls, agent(), 'edge/prov/v1/sensor-9/response', 'issued')).code).toBe(0);
    expect(await own.done).toEqual(['edge/prov/v1/sensor-9/response issued']);
    expect(await eavesdropper.done).toEqual([]);
  });

  it('refuses a revoked device once Mosquitto rereads the CRL the agent rewrote (SIGHUP, no restart), while others still connect', async () => {
    const serial = await enroll('sensor-3');
    expect((await publish(ports.mtls, device('sensor-3'), 'devices/sensor-3/x', 'before')).code).toBe(0);
    const revoked = await cli('ca', 'revoke', serial, '--reason', 'keyCompromise');
    expect(revoked.code, revoked.stderr).toBe(0);
    // Mosquitto 2.0.11 rereads crlfile on SIGHUP (what systemctl reload mosquitto sends).
    await broker.reload();
    const since = broker.mark();
    expect((await publish(ports.mtls, device('sensor-3'), 'devices/sensor-3/x', 'after')).code).not.toBe(0);
    // Mosquitto logs a CRL refusal as a failed verification, possibly after the client gave up.
    await broker.waitForLog(/certificate verify failed/, { since });
    expect((await publish(ports.mtls, device('sensor-1'), 'devices/sensor-1/x', 'still here')).code).toBe(0);
  });
});

describe('broker mosquitto-config before the CA exists', () => {
  it('says to run edge-agent ca init, not to set ca.autoInit, which is already on', async () => {
    const tmp = tempDir();
    try {
      const config = join(tmp.dir, 'agent.yaml');
      writeFileSync(config, `agent:\n  id: gw-first\n  dataDir: ${join(tmp.dir, 'data')}\n`);
      const r = await runCli(['broker', 'mosquitto-config', '--out', join(tmp.dir, 'broker'), '--config', config]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/CA_NOT_INITIALISED: no CA in .*; run edge-agent ca init/);
      expect(r.stderr).not.toMatch(/set ca\.autoInit/);
    } finally {
      tmp.cleanup();
    }
  });
});
