import { SoftwareKey } from '../../certs/keys/backend.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import type { caFixture } from './caFixture.js';

/** A key and certificate for a TLS peer of the broker tests (PEM). */
export interface Creds {
  key: string;
  /** The certificate followed by its issuing CA (the chain without the root), as Mosquitto's certfile has it. */
  cert: string;
  serial: string;
}

/** Issues a fresh P-256 identity from the fixture CA: the broker's own (localhost, 127.0.0.1) or a device's. */
export async function issueCreds(ca: ReturnType<typeof caFixture>, profile: 'broker-server' | 'mqtt-device', identity: string): Promise<Creds> {
  const key = SoftwareKey.generate('ec-p256');
  const issued = await ca.authority.issue({
    profile,
    identity,
    csr: buildCsr(key, encodeName({ commonName: identity })),
    ...(profile === 'broker-server' ? { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] } : {}),
  });
  return {
    key: key.exportable().export({ type: 'pkcs8', format: 'pem' }) as string,
    cert: issued.record.pem + issued.chain.slice(0, -1).join(''),
    serial: issued.record.serial,
  };
}
