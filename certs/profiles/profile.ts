import { CertError } from '../errors.js';
import { DEVICE_ID_PATTERN, DEVICE_ID_RULE } from './deviceId.js';
import type { KeyUsage, SubjectAltNames } from '../x509/extensions.js';
import type { NameAttributes } from '../x509/name.js';
import type { KeyType } from '../x509/publicKey.js';
import type { PreparedRequest } from '../request.js';

export type ProfileName = 'mqtt-device' | 'opcua-application' | 'broker-server' | 'agent-client';
export const PROFILE_NAMES: readonly ProfileName[] = ['mqtt-device', 'opcua-application', 'broker-server', 'agent-client'];

/** What the caller (the agent, never the device) says about the identity being certified. */
export interface IdentityRequest {
  identity: string;
  /** Optional human-readable CN where the identity is not one (OPC UA application name). */
  commonName?: string;
  dnsNames?: string[];
  ipAddresses?: string[];
}

/**
 * Who names the identity. `requester`: the sender of the CSR asks for it
 * (a device enrolling itself), so what its CSR says about itself must agree.
 * `operator`: the agent or a person names it, and the CSR's own names are
 * ignored (the template writes the subject).
 */
export type RequestOrigin = 'requester' | 'operator';

export interface RequestContext extends IdentityRequest {
  origin: RequestOrigin;
}

/** What goes into the certificate, decided by the profile alone. */
export interface ProfileTemplate {
  subject: NameAttributes;
  san?: SubjectAltNames;
  keyUsage: KeyUsage[];
  extKeyUsage: string[];
}

/**
 * A kind of identity. The template is fixed by the profile: the request
 * supplies the public key (in its CSR) and the identity, never CA flags,
 * key usages or names of its own choosing.
 */
export interface Profile {
  readonly name: ProfileName;
  /** Key types a CSR for this profile may carry. */
  readonly allowedKeys: readonly KeyType[];
  /** Which issuing CA signs: the RSA one, the EC one, or the one matching the requester's key family. */
  readonly issuer: 'ec' | 'rsa' | 'by-key';
  /** A CSR asking for CA:TRUE or keyCertSign: refused, or ignored (the leaf comes out CA:FALSE regardless). */
  readonly onCaRequest: 'reject' | 'ignore';
  /** SAN kinds every certificate of this profile must carry (checked by lint). */
  readonly requiredSans: readonly ('uri' | 'dns-or-ip')[];
  template(request: IdentityRequest, keyType: KeyType, organization: string): ProfileTemplate;
  /**
   * The profile's own acceptance rules for a prepared request, beyond the
   * key type and the template's identity checks (as a smallstep provisioner
   * owns its validators). Throws a CertError; changes nothing.
   */
  validate?(request: PreparedRequest, context: RequestContext): void;
}

export function requireDeviceId(identity: string, what: string): void {
  if (!DEVICE_ID_PATTERN.test(identity)) {
    throw new CertError('REQUEST_INVALID', `${what} ${JSON.stringify(identity)} must be ${DEVICE_ID_RULE}`);
  }
}

export function requireNoExtras(request: IdentityRequest, profile: ProfileName, allowed: (keyof IdentityRequest)[]): void {
  for (const key of ['commonName', 'dnsNames', 'ipAddresses'] as const) {
    const value = request[key];
    const present = Array.isArray(value) ? value.length > 0 : value !== undefined;
    if (present && !allowed.includes(key)) throw new CertError('REQUEST_INVALID', `profile ${profile} takes no ${key}`);
  }
}
