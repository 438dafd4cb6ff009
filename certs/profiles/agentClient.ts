import { OID } from '../x509/oids.js';
import { requireDeviceId, requireNoExtras, type Profile } from './profile.js';

/**
 * The agent's own identity towards the broker, OPC UA servers and the
 * upstream: CN = agent id and SAN URI urn:edge-agent:<id> (its OPC UA
 * applicationUri). An RSA key gets the OPC UA key usages and the RSA issuer.
 */
export const agentClient: Profile = {
  name: 'agent-client',
  allowedKeys: ['ec-p256', 'ec-p384', 'rsa'],
  issuer: 'by-key',
  onCaRequest: 'reject',
  requiredSans: ['uri'],
  template(request, keyType, organization) {
    requireDeviceId(request.identity, 'agent id');
    requireNoExtras(request, 'agent-client', ['dnsNames']);
    return {
      subject: { organization, commonName: request.identity },
      san: { uris: [`urn:edge-agent:${request.identity}`], dnsNames: request.dnsNames ?? [] },
      keyUsage: keyType === 'rsa' ? ['digitalSignature', 'nonRepudiation', 'keyEncipherment', 'dataEncipherment'] : ['digitalSignature'],
      extKeyUsage: [OID.clientAuth],
    };
  },
};
