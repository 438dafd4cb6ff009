import { OID } from '../x509/oids.js';
import { requireDeviceId, requireNoExtras, type Profile } from './profile.js';

/** A device on the MQTT broker: CN = device id, TLS client authentication. */
export const mqttDevice: Profile = {
  name: 'mqtt-device',
  allowedKeys: ['ec-p256', 'ec-p384', 'rsa'],
  issuer: 'ec',
  onCaRequest: 'reject',
  requiredSans: [],
  template(request, keyType, organization) {
    requireDeviceId(request.identity, 'device id');
    requireNoExtras(request, 'mqtt-device', []);
    return {
      subject: { organization, commonName: request.identity },
      keyUsage: keyType === 'rsa' ? ['digitalSignature', 'keyEncipherment'] : ['digitalSignature'],
      extKeyUsage: [OID.clientAuth],
    };
  },
};
