import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SoftwareKey } from '../../../certs/keys/backend.js';
import { buildCsr } from '../../../certs/x509/csrBuilder.js';
import { encodeName } from '../../../certs/x509/name.js';
import { CaService } from '../../../agent/ca/caService.js';
import { resolvePaths } from '../../../agent/config/load.js';
import { defaultConfig } from '../../../agent/config/schema.js';
import { EventBus, type AgentEvents } from '../../../agent/events.js';
import { Metrics } from '../../../agent/metrics.js';
import { CertificateRepository } from '../../../agent/store/certificateRepository.js';
import { StoreService } from '../../../agent/store/storeService.js';
import { tempDir } from '../../helpers/daemon.js';

describe('CaService', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => {
    vi.useRealTimers();
    tmp.cleanup();
  });

  it('announces a certificate past two thirds of its lifetime once, on the bus and in a gauge, and counts issuance', async () => {
    const log = pino({ level: 'silent' });
    const config = resolvePaths({ ...defaultConfig(), agent: { ...defaultConfig().agent, dataDir: join(tmp.dir, 'data') } }, tmp.dir);
    const storage = new StoreService({ log, options: config.store });
    const metrics = new Metrics();
    const bus = new EventBus(log);
    const events: AgentEvents['certificate.expiring'][] = [];
    bus.on('certificate.expiring', 'test', (e) => events.push(e));
    // The store is open before the CA is built, as in the daemon's composition root.
    await storage.start();
    const ca = new CaService({
      log,
      config: { ...config.ca, expiryCheckIntervalMs: 60_000 },
      gatewayId: 'gw',
      certificates: new CertificateRepository(storage.store),
      metrics,
      bus,
      env: {},
    });
    // Date and intervals are faked; setImmediate (the grouped commit) stays real.
    vi.useFakeTimers({ toFake: ['Date', 'setInterval', 'clearInterval', 'setTimeout', 'clearTimeout'] });
    await ca.start();
    const issued = await ca.issue({
      profile: 'mqtt-device',
      identity: 'flow-1',
      csr: buildCsr(SoftwareKey.generate('ec-p256'), encodeName({ commonName: 'x' })),
    });
    vi.advanceTimersByTime(60_000);
    expect(events).toEqual([]);

    vi.setSystemTime(new Date(Date.now() + 250 * 86_400_000)); // 365-day certificate: two thirds is day 243
    vi.advanceTimersByTime(60_000);
    expect(events).toEqual([{ serial: issued.record.serial, profile: 'mqtt-device', identity: 'flow-1', notAfter: issued.record.notAfter }]);
    vi.advanceTimersByTime(120_000);
    expect(events).toHaveLength(1);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/^edge_agent_certificates_renewal_due 1$/m);
    expect(text).toMatch(/^edge_agent_certificates_issued_total\{profile="mqtt-device"\} 1$/m);
    await ca.stop();
    await storage.stop();
  });
});
