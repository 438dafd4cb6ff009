import { CertError } from '../errors.js';
import { OID } from '../x509/oids.js';
import type { Profile } from './profile.js';

const URI = /^[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x7e]{1,1000}$/;

/**
 * An OPC UA application instance certificate (Part 6 6.2.2): SAN URI = the
 * applicationUri plus the server's DNS names and addresses, the four key
 * usages OPC UA security policies need, server and client authentication,
 * RSA signed with SHA-256 by the RSA issuing CA (Basic256Sha256 and later).
 * Servers' CreateSigningRequest may ask for keyCertSign (self-signed habit):
 * that request is ignored, the leaf is always CA:FALSE.
 */
export const opcuaApplication: Profile = {
  name: 'opcua-application',
  allowedKeys: ['rsa'],
  issuer: 'rsa',
  onCaRequest: 'ignore',
  requiredSans: ['uri'],
  template(request, _keyType, organization) {
    if (!URI.test(request.identity)) {
      throw new CertError('REQUEST_INVALID', `applicationUri ${JSON.stringify(request.identity)} is not a URI`);
    }
    const commonName = request.commonName ?? request.identity.slice(-64);
    return {
      subject: { organization, commonName },
      san: { uris: [request.identity], dnsNames: request.dnsNames ?? [], ipAddresses: request.ipAddresses ?? [] },
      keyUsage: ['digitalSignature', 'nonRepudiation', 'keyEncipherment', 'dataEncipherment'],
      extKeyUsage: [OID.serverAuth, OID.clientAuth],
    };
  },
  /**
   * A server asking for itself (Part 12 CreateSigningRequest): its CSR names
   * exactly its applicationUri as the one URI of its subjectAltName, what the
   * certificate will say; a CSR naming another application is refused,
   * whatever the template would write.
   */
  validate(request, context) {
    if (context.origin !== 'requester') return;
    const uris = request.requested.uris;
    if (uris.length !== 1 || uris[0] !== context.identity) {
      throw new CertError(
        'NAME_INVALID',
        `the CSR names ${uris.length === 0 ? 'no URI' : uris.join(', ')} in its subjectAltName, ` +
          `not exactly the server's applicationUri ${context.identity}`,
      );
    }
  },
};
