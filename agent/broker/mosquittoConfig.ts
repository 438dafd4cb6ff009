import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { CertificateAuthority } from '../../certs/authority.js';
import { writeFileAtomic, writeKeyFile } from '../../certs/keys/fileKey.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { prepare } from '../../certs/request.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import { devicesAcl, provisioningAcl } from './mosquittoAcl.js';

export interface MosquittoConfigOptions {
  out: string;
  /** CN of the broker certificate (the gateway id). */
  serverName: string;
  dnsNames: string[];
  ipAddresses: string[];
  bind: string;
  provisioningPort: number;
  mtlsPort: number;
  /** The agent's own identity: the one client allowed to read every request and answer it. */
  agentId: string;
  topicPrefix: string;
  /** configuration.topicRoot (default `config`): the desired and reported configuration topics. */
  configTopicRoot?: string;
  /** The CRL file the agent keeps current (ca.crlFile); copied into DIR when it is elsewhere. */
  crlFile: string;
  /** Devices cut off (revoked, decommissioned): denied everything on the mutual-TLS listener. */
  cutOff?: readonly string[];
}

export interface MosquittoConfigFiles {
  conf: string;
  cafile: string;
  certfile: string;
  keyfile: string;
  crlfile: string;
  provisioningAcl: string;
  devicesAcl: string;
  serial: string;
}

/**
 * Everything an external Mosquitto 2 needs to serve the gateway's devices:
 * the CA chain, a broker-server certificate and key, the CRL, one ACL file
 * per listener, and a configuration with two listeners.
 *
 * - The provisioning listener (TLS, no client certificate) lets a client
 *   publish only to its own request topic and read only its own response
 *   topic, keyed on its client id (`%c`).
 * - The mutual-TLS listener accepts only certificates from this CA that the
 *   CRL does not list, and takes the certificate's CN as the username
 *   (`use_identity_as_username`), so identities cannot be claimed.
 *
 * `per_listener_settings true` keeps the two apart: a client on the
 * provisioning listener cannot name itself after the agent and inherit the
 * agent's rights on the other listener.
 */
export async function writeMosquittoConfig(authority: CertificateAuthority, o: MosquittoConfigOptions): Promise<MosquittoConfigFiles> {
  mkdirSync(o.out, { recursive: true, mode: 0o750 });
  const files: MosquittoConfigFiles = {
    conf: join(o.out, 'mosquitto.conf'),
    cafile: join(o.out, 'ca.pem'),
    certfile: join(o.out, 'server.crt'),
    keyfile: join(o.out, 'server.key'),
    crlfile: join(o.out, 'crl.pem'),
    provisioningAcl: join(o.out, 'acl-provisioning'),
    devicesAcl: join(o.out, 'acl-devices'),
    serial: '',
  };
  const key = SoftwareKey.generate('ec-p256');
  const issued = await authority.issue({
    profile: 'broker-server',
    identity: o.serverName,
    dnsNames: o.dnsNames,
    ipAddresses: o.ipAddresses,
    csr: prepare(buildCsr(key, encodeName({ commonName: o.serverName }))),
    renew: true,
  });
  files.serial = issued.record.serial;
  // Only the EC issuing CA (and the root): it issues every MQTT identity (devices, the broker, the
  // agent's MQTT link). Certificates from the RSA issuing CA (OPC UA applications) are refused, so a
  // server's self-chosen name in one can never become an MQTT user name.
  writeFileAtomic(files.cafile, authority.issuer('ec').chainPem.join(''), 0o644);
  writeFileAtomic(files.certfile, issued.record.pem + issued.chain.slice(0, -1).join(''), 0o644);
  writeKeyFile(files.keyfile, key.exportable(), undefined);
  if (o.crlFile !== files.crlfile && existsSync(o.crlFile)) writeFileAtomic(files.crlfile, readFileSync(o.crlFile), 0o644);

  writeFileAtomic(files.provisioningAcl, provisioningAcl(o.topicPrefix), 0o644);
  writeFileAtomic(files.devicesAcl, devicesAcl(o.agentId, o.topicPrefix, o.cutOff ?? [], o.configTopicRoot), 0o644);
  const tls = [`cafile ${files.cafile}`, `certfile ${files.certfile}`, `keyfile ${files.keyfile}`];
  writeFileAtomic(
    files.conf,
    [
      '# Written by `edge-agent broker mosquitto-config`. Include it from mosquitto.conf',
      '# (or use it as the whole file); the paths below are absolute.',
      '# The agent rewrites crlfile and the devices ACL and has Mosquitto reread both on SIGHUP (as 2.0.11 does).',
      'per_listener_settings true',
      '# Answers are small and latency matters more than packing: no Nagle delay.',
      'set_tcp_nodelay true',
      '# Mosquitto accepts packets of up to 256 MiB by default; enrollment requests are a few KiB.',
      '# Raise this if other clients of this broker need larger messages.',
      'max_packet_size 1048576',
      '',
      '# Provisioning: TLS with the broker certificate, no client certificate.',
      `listener ${o.provisioningPort} ${o.bind}`,
      ...tls,
      'require_certificate false',
      'allow_anonymous true',
      `acl_file ${files.provisioningAcl}`,
      '',
      '# Devices and the agent: mutual TLS with certificates from the gateway CA only.',
      `listener ${o.mtlsPort} ${o.bind}`,
      ...tls,
      `crlfile ${files.crlfile}`,
      'require_certificate true',
      'use_identity_as_username true',
      'allow_anonymous false',
      `acl_file ${files.devicesAcl}`,
      '',
    ].join('\n'),
    0o644,
  );
  return files;
}
