import { join } from 'node:path';
import pino from 'pino';
import { CertificateAuthority } from '../../certs/authority.js';
import { initCa } from '../../certs/hierarchy.js';
import { IssuingCa } from '../../certs/issuer.js';
import { CertificateRepository } from '../../agent/store/certificateRepository.js';
import { Store } from '../../agent/store/database.js';

/** A CA on disk (root, EC and RSA issuing CAs) with its SQLite store, as the daemon has them. */
export function caFixture(dir: string, options: { passphrase?: string; allowKeyReuse?: boolean; now?: () => Date } = {}) {
  const caDir = join(dir, 'ca');
  initCa({
    dir: caDir,
    passphrase: options.passphrase,
    organization: 'Test Plant',
    gatewayId: 'gw-test',
    rootKeyType: 'ec-p256',
    issuers: { ec: 'ec-p256', rsa: 'rsa-2048' },
    rootValidityDays: 3650,
    issuingValidityDays: 1825,
  });
  const { store } = Store.open(
    { path: join(dir, 'agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'quick' },
    pino({ level: 'silent' }),
  );
  const repository = new CertificateRepository(store);
  const authority = new CertificateAuthority({
    issuers: { ec: IssuingCa.load(caDir, 'ec', options.passphrase)!, rsa: IssuingCa.load(caDir, 'rsa', options.passphrase)! },
    store: repository,
    organization: 'Test Plant',
    validityDays: { 'mqtt-device': 365, 'opcua-application': 730, 'broker-server': 365, 'agent-client': 365 },
    allowKeyReuse: options.allowKeyReuse ?? false,
    ...(options.now ? { now: options.now } : {}),
  });
  const count = () => (store.db.prepare('SELECT count(*) AS n FROM certificates').get() as { n: number }).n;
  return { caDir, store, repository, authority, count, close: () => store.close() };
}
