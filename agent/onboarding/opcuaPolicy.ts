import { readFileSync } from 'node:fs';
import { opcuaApplication } from '../../certs/profiles/opcuaApplication.js';
import { prepare, type PreparedRequest } from '../../certs/request.js';
import type { Config } from '../config/schema.js';
import type { Device } from '../inventory/device.js';
import type { AdminUser } from '../transport/opcuaPushSession.js';
import { globToRegExp } from './policy.js';

type PushConfig = Config['opcua']['push'];

/** What discovery recorded about an OPC UA server (device.source.opcua). */
export interface OpcuaSource {
  endpointUrl: string;
  applicationUri: string;
  productUri?: string;
  certificateThumbprint?: string;
  /** The thumbprint when discovery first found the server. */
  firstCertificateThumbprint?: string;
  buildInfo?: { manufacturerName?: string };
  security?: string[];
}

export function opcuaSource(device: Device): OpcuaSource | undefined {
  const s = device.source.opcua as OpcuaSource | undefined;
  return s && typeof s.endpointUrl === 'string' && typeof s.applicationUri === 'string' ? s : undefined;
}

/**
 * The first opcua.push.approve rule that matches the server, as text for
 * the audit ("rule 2 (applicationUri urn:plant1:*)"), or undefined. A rule
 * matches when every field it gives does: applicationUri and productUri as
 * discovery read them, manufacturer from the DI DeviceSet or BuildInfo,
 * thumbprint against the certificate the server had when discovery first
 * found it.
 */
export function approvingRule(config: PushConfig, device: Device): string | undefined {
  const source = opcuaSource(device);
  if (!source) return undefined;
  const values: Record<string, string | undefined> = {
    applicationUri: source.applicationUri,
    productUri: source.productUri,
    manufacturer: device.nameplate.manufacturer ?? source.buildInfo?.manufacturerName,
  };
  for (const [i, rule] of config.approve.entries()) {
    const fields = Object.entries(rule).filter(([, v]) => v !== undefined) as [string, string][];
    const matches = fields.every(([key, pattern]) =>
      key === 'thumbprint'
        ? (source.firstCertificateThumbprint ?? source.certificateThumbprint)?.toLowerCase() === pattern.toLowerCase()
        : values[key] !== undefined && globToRegExp(pattern).test(values[key]!),
    );
    if (fields.length > 0 && matches) return `opcua.push.approve rule ${i + 1} (${fields.map(([k, v]) => `${k} ${v}`).join(', ')})`;
  }
  return undefined;
}

/**
 * The SecurityAdmin credentials for a server: the first opcua.push.securityAdmins
 * entry whose pattern matches its applicationUri, the password read from
 * its file at each use (so a changed file needs no restart). A string is
 * the reason there are none.
 */
export function securityAdminFor(config: PushConfig, applicationUri: string): AdminUser | string {
  const entry = config.securityAdmins.find((a) => globToRegExp(a.applicationUri).test(applicationUri));
  if (!entry) return `no SecurityAdmin credentials for ${applicationUri} in opcua.push.securityAdmins`;
  if (entry.password) return { username: entry.username, password: entry.password };
  try {
    const password = readFileSync(entry.passwordFile!, 'utf8').split(/\r?\n/)[0] ?? '';
    if (password === '') return `the password file ${entry.passwordFile} for ${entry.applicationUri} is empty`;
    return { username: entry.username, password };
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    return `the password file ${entry.passwordFile} for ${entry.applicationUri} cannot be read: ${why}`;
  }
}

/**
 * The CSR a server made with CreateSigningRequest, checked before anything
 * is issued for it (the push's check-csr step): well formed, signed by the
 * key it carries, and passing the opcua-application profile's validator for
 * a server asking for itself (exactly its applicationUri as the one URI of
 * its subjectAltName). Returns the request prepared, which the CA issues
 * from without reading the CSR again (and validates again, origin requester).
 */
export function checkServerCsr(csr: Buffer, applicationUri: string): PreparedRequest {
  const prepared = prepare(csr);
  opcuaApplication.validate?.(prepared, { identity: applicationUri, origin: 'requester' });
  return prepared;
}

/**
 * What to tell the operator when a server refuses the agent's secure
 * channel with `statusName` because of the agent's certificate, or
 * undefined for any other refusal. Each of these is a commissioning fault
 * that retrying soon does not cure: node-opcua servers answer
 * BadSecurityChecksFailed for a client certificate they do not trust, and
 * pass the revocation and time faults through as they are.
 */
export function certificateRefusal(statusName: string): string | undefined {
  const bundle = 'edge-agent opcua client-bundle';
  switch (statusName) {
    case 'BadSecurityChecksFailed':
    case 'BadCertificateUntrusted':
    case 'BadCertificateChainIncomplete':
      return (
        `the server does not trust the agent's certificate: install \`${bundle}\` on it (node-opcua servers read it only at start); ` +
        `it answered ${statusName} (a node-opcua server also keeps refusing a certificate it has put in its rejected folder until it is deleted there)`
      );
    case 'BadCertificateRevocationUnknown':
    case 'BadCertificateIssuerRevocationUnknown':
      return (
        `the server has no CRL for the gateway CA (it answered ${statusName}): ` +
        `install the CRLs of \`${bundle}\` (issuers/crl) on it (node-opcua servers read them only at start)`
      );
    case 'BadCertificateTimeInvalid':
    case 'BadCertificateIssuerTimeInvalid':
      return `the server finds the agent's certificate or its CA expired or not yet valid (it answered ${statusName}): check the server's clock`;
    case 'BadCertificateRevoked':
    case 'BadCertificateIssuerRevoked':
      return `the server holds the agent's certificate or its CA as revoked (it answered ${statusName}): install the current \`${bundle}\` on it`;
    case 'BadCertificateUseNotAllowed':
    case 'BadCertificateIssuerUseNotAllowed':
    case 'BadCertificateUriInvalid':
    case 'BadCertificateHostNameInvalid':
      return `the server refuses the agent's certificate (it answered ${statusName})`;
    default:
      return undefined;
  }
}
