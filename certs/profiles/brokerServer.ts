import { CertError } from '../errors.js';
import { OID } from '../x509/oids.js';
import { requireDeviceId, requireNoExtras, type Profile } from './profile.js';

/** The MQTT broker's (and the local API's) TLS server certificate: SANs for the gateway's names and addresses. */
export const brokerServer: Profile = {
  name: 'broker-server',
  allowedKeys: ['ec-p256', 'ec-p384', 'rsa'],
  issuer: 'by-key',
  onCaRequest: 'reject',
  requiredSans: ['dns-or-ip'],
  template(request, keyType, organization) {
    requireDeviceId(request.identity, 'server name');
    requireNoExtras(request, 'broker-server', ['dnsNames', 'ipAddresses']);
    if ((request.dnsNames?.length ?? 0) + (request.ipAddresses?.length ?? 0) === 0) {
      throw new CertError('REQUEST_INVALID', 'a broker-server certificate needs at least one DNS name or IP address');
    }
    return {
      subject: { organization, commonName: request.identity },
      san: { dnsNames: request.dnsNames ?? [], ipAddresses: request.ipAddresses ?? [] },
      keyUsage: keyType === 'rsa' ? ['digitalSignature', 'keyEncipherment'] : ['digitalSignature'],
      extKeyUsage: [OID.serverAuth],
    };
  },
};
