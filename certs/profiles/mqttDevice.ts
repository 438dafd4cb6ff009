import { CertError } from '../errors.js';
import { OID } from '../x509/oids.js';
import { requireDeviceId, requireNoExtras, type Profile } from './profile.js';

/** A device on the MQTT broker: CN = device id, TLS client authentication; a device's own CSR may name no other CN. */
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
  /** A device asking for itself: the CN its CSR carries, if any, is its device id (one CN at most). */
  validate(request, context) {
    if (context.origin !== 'requester') return;
    if (request.commonNames.length > 1) throw new CertError('REQUEST_INVALID', 'the CSR subject has more than one CN');
    const cn = request.commonNames[0];
    if (cn !== undefined && cn !== context.identity)
      throw new CertError('REQUEST_INVALID', `the CSR is for CN ${JSON.stringify(cn)}, not for device ${context.identity}`);
  },
};
