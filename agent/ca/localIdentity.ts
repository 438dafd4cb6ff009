import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { SoftwareKey, type CaKeyType } from '../../certs/keys/backend.js';
import { writeFileAtomic, writeKeyFile } from '../../certs/keys/fileKey.js';
import { prepare } from '../../certs/request.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { canonicalIp } from '../../certs/x509/extensions.js';
import { pemBlocks } from '../../certs/x509/pem.js';
import { encodeName } from '../../certs/x509/name.js';
import type { Logger } from '../log.js';
import type { CaService } from './caService.js';

/** What making a local identity needs of the CA: the daemon's CaService, or the CLI's authority. */
export type IdentityCa = Pick<CaService, 'chainPem' | 'current' | 'issue'>;

export interface LocalIdentity {
  /** PEM private key. */
  key: string;
  /** PEM certificate followed by its issuing CA. */
  cert: string;
  /** PEM trust bundle of the gateway CA. */
  ca: string;
  serial: string;
}

export interface LocalIdentityRequest {
  profile: 'broker-server' | 'agent-client';
  identity: string;
  dnsNames?: string[];
  ipAddresses?: string[];
  dir: string;
  basename: string;
  /** Key made for a new certificate (default ec-p256; OPC UA needs RSA). */
  keyType?: CaKeyType;
  /**
   * Write the certificate alone, without its issuing CA. OPC UA peers match
   * the certificate a client sends against their trust list as a whole:
   * node-opcua servers do not recognise a trusted certificate sent with its chain.
   */
  leafOnly?: boolean;
}

/**
 * A certificate the agent holds for itself (the embedded broker's server
 * certificate, the agent's client certificate towards an external broker),
 * kept as <dir>/<basename>.key (0600) and .crt. It is reused while it is the
 * identity's current certificate at this CA, names what is asked, and is
 * within the first two thirds of its life; otherwise a new key is made and a
 * new certificate issued (which supersedes the old one).
 */
export async function ensureLocalIdentity(ca: IdentityCa, r: LocalIdentityRequest, log: Logger): Promise<LocalIdentity> {
  mkdirSync(r.dir, { recursive: true, mode: 0o700 });
  const keyFile = join(r.dir, `${r.basename}.key`);
  const certFile = join(r.dir, `${r.basename}.crt`);
  const bundle = ca.chainPem();
  if (existsSync(keyFile) && existsSync(certFile)) {
    const cert = readFileSync(certFile, 'utf8');
    const reason = reuseRefusal(ca, r, cert);
    if (reason === undefined) {
      const leaf = new X509Certificate(cert);
      // A file written with its chain before leafOnly existed is rewritten, the certificate kept.
      if (r.leafOnly && (cert.match(/BEGIN CERTIFICATE/g) ?? []).length > 1) writeFileAtomic(certFile, leaf.toString(), 0o644);
      return { key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8'), ca: bundle, serial: leaf.serialNumber.toLowerCase() };
    }
    log.info({ profile: r.profile, identity: r.identity, reason }, 'local certificate replaced');
  }
  const key = SoftwareKey.generate(r.keyType ?? 'ec-p256');
  const issued = await ca.issue({
    profile: r.profile,
    identity: r.identity,
    csr: prepare(buildCsr(key, encodeName({ commonName: r.identity }))),
    ...(r.dnsNames && r.dnsNames.length > 0 ? { dnsNames: r.dnsNames } : {}),
    ...(r.ipAddresses && r.ipAddresses.length > 0 ? { ipAddresses: r.ipAddresses } : {}),
    renew: true,
  });
  writeKeyFile(keyFile, key.exportable(), undefined);
  const certPem = r.leafOnly ? issued.record.pem : issued.record.pem + issued.chain.slice(0, -1).join('');
  writeFileAtomic(certFile, certPem, 0o644);
  return { key: readFileSync(keyFile, 'utf8'), cert: certPem, ca: bundle, serial: issued.record.serial };
}

function reuseRefusal(ca: IdentityCa, r: LocalIdentityRequest, pem: string): string | undefined {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch {
    return 'certificate file unreadable';
  }
  const current = ca.current(r.profile, r.identity);
  if (!current || current.thumbprint.toLowerCase() !== cert.fingerprint256.replace(/:/g, '').toLowerCase())
    return 'not the current certificate of this identity at this CA';
  // After `ca revoke-issuing` the record is still current, but its issuing CA is gone from the chain peers trust.
  const issuers = pemBlocks(ca.chainPem()).map((b) => new X509Certificate(b.der));
  if (!issuers.some((i) => cert.checkIssued(i) && cert.verify(i.publicKey))) return 'its issuing CA is no longer in use';
  if ((r.keyType ?? 'ec-p256').startsWith('rsa') !== (cert.publicKey.asymmetricKeyType === 'rsa')) return 'its key is not of the type asked for';
  const start = new Date(cert.validFrom).getTime();
  const end = new Date(cert.validTo).getTime();
  if (Date.now() > start + ((end - start) * 2) / 3) return 'past two thirds of its lifetime';
  // Node writes IPv6 addresses uncompressed and in capitals (0:0:0:0:0:0:0:1): compared canonical, whole entries only.
  const ipOf = (text: string) => (isIP(text) !== 0 ? `IP:${canonicalIp(text)}` : text);
  const named = new Set(
    (cert.subjectAltName ?? '').split(', ').map((entry) => (entry.startsWith('IP Address:') ? ipOf(entry.slice(11)) : entry.toLowerCase())),
  );
  for (const d of r.dnsNames ?? []) if (!named.has(`dns:${d.toLowerCase()}`)) return `does not name ${d}`;
  for (const ip of r.ipAddresses ?? []) if (!named.has(`IP:${canonicalIp(ip)}`)) return `does not name ${ip}`;
  return undefined;
}

/**
 * The agent's own client identities, kept in <dataDir>/identity/: on MQTT
 * (CN = agent.id, EC key, so the EC issuing CA signs it: the only CA an
 * external Mosquitto trusts), and as an OPC UA client (CN = <agent.id>-opcua,
 * SAN URI urn:edge-agent:<agent.id>-opcua, its applicationUri; RSA-2048, which
 * OPC UA's security policies need). Two identities, since the CA keeps one
 * valid certificate per profile and identity.
 */
export function ensureAgentClient(
  ca: IdentityCa,
  config: { agent: { id: string; dataDir: string } },
  log: Logger,
  use: 'mqtt' | 'opcua',
): Promise<LocalIdentity & { keyFile: string; certFile: string; applicationUri: string }> {
  const dir = join(config.agent.dataDir, 'identity');
  const identity = use === 'mqtt' ? config.agent.id : opcuaClientId(config.agent.id);
  const basename = use === 'mqtt' ? 'agent-client' : 'opcua-client';
  return ensureLocalIdentity(
    ca,
    { profile: 'agent-client', identity, dir, basename, keyType: use === 'mqtt' ? 'ec-p256' : 'rsa-2048', leafOnly: use === 'opcua' },
    log,
  ).then((id) => ({
    ...id,
    keyFile: join(dir, `${basename}.key`),
    certFile: join(dir, `${basename}.crt`),
    applicationUri: `urn:edge-agent:${identity}`,
  }));
}

/** The agent's identity as an OPC UA client (a device id: 64 characters at most). */
export function opcuaClientId(agentId: string): string {
  return `${agentId.slice(0, 57)}-opcua`;
}
