import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../agent/config/load.js';
import { Store } from '../../../agent/store/database.js';
import { openRepositories, type Repositories } from '../../../agent/store/repositories.js';
import { writePlantConfig } from '../../../scripts/bench/footprintDaemon.js';
import { seedPlant, type PlantSeed } from '../../../scripts/bench/seedPlant.js';
import { runCli, tempDir } from '../../helpers/daemon.js';
import { openssl } from '../../helpers/openssl.js';

/**
 * The footprint bench's seed, at small scale: what it leaves must be what
 * the daemon's own enrollment and push leave, checked from the database and
 * with openssl against the gateway CA and its published CRL.
 */
describe('the plant seed of the footprint bench', () => {
  const { dir, cleanup } = tempDir('edge-agent-seed-');
  let seed: PlantSeed;
  let store: Store;
  let repos: Repositories;
  let caDir: string;
  let crlFile: string;

  beforeAll(async () => {
    const config = writePlantConfig(dir, { id: 'gw-seed' });
    const init = await runCli(['ca', 'init', '--config', config]);
    expect(init.code, init.stderr).toBe(0);
    seed = await seedPlant({ config, devices: 50, opcuaEvery: 10, revokedEvery: 15, concurrency: 8 });
    const loaded = loadConfig({ file: config, env: {} }).config;
    caDir = loaded.ca.dir;
    crlFile = loaded.ca.crlFile;
    store = Store.open({ ...loaded.store, integrityCheck: 'full' }, pino({ level: 'silent' })).store;
    repos = openRepositories(store);
  }, 120_000);

  afterAll(() => {
    store?.close();
    cleanup();
  });

  it('enrolls the MQTT devices, pushes to the OPC UA servers and revokes some, as asked', () => {
    expect(seed.mqtt).toHaveLength(45);
    expect(seed.opcua).toHaveLength(5);
    expect(seed.revoked).toHaveLength(3);
    expect(repos.devices.countByState()).toEqual({ provisioned: 47, revoked: 3 });
  });

  it('leaves each MQTT device the request, token use, certificate and history of an enrollment', () => {
    const token = repos.enrollments.tokens()[0]!;
    expect(token).toMatchObject({ label: 'commissioning', uses: 45 });
    for (const id of seed.mqtt) {
      const device = repos.devices.get(id)!;
      const [request, ...more] = repos.enrollments.withStatus('issued', id);
      expect(more).toEqual([]);
      expect(request).toMatchObject({ deviceId: id, status: 'issued', tokenId: token.id, certificateSerial: device.certificateSerial });
      const cert = repos.certificates.get(device.certificateSerial!)!;
      expect(cert).toMatchObject({ profile: 'mqtt-device', identity: device.name, spkiSha256: request!.spkiSha256 });
      expect(cert.status).toBe(seed.revoked.includes(id) ? 'revoked' : 'valid');
      expect(device).toMatchObject({ online: true, nameplate: request!.nameplate, location: { site: expect.any(String) } });
      expect(device.source).toMatchObject({ protocol: 'mqtt', provisioning: `edge/prov/v1/${device.name}`, sparkplug: expect.any(Object) });
      const history = repos.devices.events(id).map((e) => `${e.from ?? '-'}>${e.to} ${e.actor}`);
      // Approved and issued in one commit: one change, straight to provisioned.
      expect(history.slice(0, 3)).toEqual(['->provisioned policy', 'provisioned>provisioned discovery', 'provisioned>provisioned admin']);
      if (seed.revoked.includes(id)) expect(history.slice(3)).toEqual(['provisioned>revoked technician:admin']);
      else expect(history).toHaveLength(3);
    }
  });

  it('leaves each OPC UA server discovered, approved, pushed and provisioned with its push job done', () => {
    for (const id of seed.opcua) {
      const device = repos.devices.get(id)!;
      expect(device.state).toBe('provisioned');
      const history = repos.devices.events(id).map((e) => `${e.from ?? '-'}>${e.to} ${e.actor}`);
      expect(history).toEqual(['->discovered discovery', 'discovered>pending technician:admin', 'pending>provisioned agent', 'provisioned>provisioned admin']);
      const job = repos.pushes.get(id)!;
      expect(job).toMatchObject({ status: 'done', serial: device.certificateSerial, appliedSerial: device.certificateSerial, crlDelivered: true });
      expect(
        repos.pushes
          .steps(id)
          .filter((s) => s.outcome === 'ok')
          .map((s) => s.step)
          .sort(),
      ).toEqual(['apply', 'approved', 'check-csr', 'connect', 'csr', 'issue', 'session', 'trust', 'update', 'verify']);
      expect(repos.certificates.get(device.certificateSerial!)).toMatchObject({ profile: 'opcua-application', identity: device.name, status: 'valid' });
    }
  });

  it('issues certificates openssl verifies against the gateway CA, and refuses the revoked ones by the published CRL', async () => {
    const files = [...seed.mqtt, ...seed.opcua].map((id, i) => {
      const file = join(dir, `leaf-${i}.pem`);
      writeFileSync(file, repos.certificates.get(repos.devices.get(id)!.certificateSerial!)!.pem);
      return { id, file };
    });
    const verify = await openssl(
      [
        'verify',
        '-CAfile',
        join(caDir, 'root.crt'),
        '-untrusted',
        join(caDir, 'issuing-ec.crt'),
        '-untrusted',
        join(caDir, 'issuing-rsa.crt'),
        '-crl_check',
        '-CRLfile',
        crlFile,
        ...files.map((f) => f.file),
      ],
      dir,
    );
    const out = verify.stdout + verify.stderr;
    expect(out.match(/certificate revoked/g)).toHaveLength(seed.revoked.length);
    for (const { id, file } of files) {
      if (seed.revoked.includes(id)) expect(out).toContain(`error ${file}: verification failed`);
      else expect(out).toContain(`${file}: OK`);
    }
  });
});
