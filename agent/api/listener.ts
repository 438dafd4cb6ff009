import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { CertError } from '../../certs/errors.js';
import { caFiles } from '../../certs/issuer.js';
import { canonicalIp } from '../../certs/x509/extensions.js';
import { pemBlocks, toPem } from '../../certs/x509/pem.js';
import { ensureLocalIdentity, type IdentityCa } from '../ca/localIdentity.js';
import { DNS_NAME } from '../config/network.js';
import type { Config } from '../config/schema.js';
import { ConfigFileError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ListenerTls } from './httpServer.js';

/**
 * How a client on this machine reaches the local API: the base URL (a
 * wildcard http.host becomes the loopback address of its family; any other
 * host is used as configured, since a listener bound to one address answers
 * on that address only) and, with http.tls.enabled, the PEM trust bundle
 * the server certificate must chain to: the gateway CA chain, even when
 * http.tls.certFile names a certificate of another CA.
 */
export function apiEndpoint(config: Config): { url: string; ca?: string } {
  const url = apiUrl(config);
  return config.http.tls.enabled ? { url, ca: gatewayCaChain(config.ca.dir) } : { url };
}

/** The base URL alone (apiEndpoint without reading the CA chain). */
export function apiUrl(config: Config): string {
  const { host, port, tls } = config.http;
  const target = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `${tls.enabled ? 'https' : 'http'}://${isIP(target) === 6 ? `[${target}]` : target}:${port}`;
}

/**
 * The gateway CA chain as stored in the CA directory, read without any key:
 * every issuing CA, then the CAs above it, each once. The same bundle the
 * daemon serves at GET /ca/chain.
 */
export function gatewayCaChain(caDir: string): string {
  const seen = new Set<string>();
  for (const name of ['ec', 'rsa'] as const) {
    const cert = join(caDir, caFiles.cert(name));
    if (!existsSync(cert)) continue;
    const chain = join(caDir, caFiles.chain(name));
    const text = readFileSync(cert, 'utf8') + (existsSync(chain) ? readFileSync(chain, 'utf8') : '');
    for (const block of pemBlocks(text)) if (block.label === 'CERTIFICATE') seen.add(toPem(block.label, block.der));
  }
  if (seen.size === 0) throw new CertError('CA_NOT_INITIALISED', `no CA in ${caDir}: start the agent once (ca.autoInit) or run edge-agent ca init`);
  return [...seen].join('');
}

/**
 * The identity of the listener's own certificate. Not agent.id: the embedded
 * MQTT broker holds the broker-server certificate of that identity, and the
 * CA keeps one valid certificate per profile and identity, so sharing it
 * would make each of the two supersede the other at every start.
 */
export function httpServerId(agentId: string): string {
  return `${agentId.slice(0, 59)}-http`;
}

/**
 * What the HTTPS listener serves: the files of http.tls.certFile and keyFile
 * when set, else a broker-server certificate from the gateway CA kept in
 * <dataDir>/identity/http-server.key/.crt, naming localhost, 127.0.0.1,
 * http.host (unless a wildcard; ::1 for ::) and every http.names entry.
 */
export async function listenerTls(ca: IdentityCa, config: Config, log: Logger): Promise<ListenerTls> {
  const { host, names, tls } = config.http;
  if (tls.certFile !== '') return ownCertificate(tls.certFile, tls.keyFile, config.ca.dir, log);
  const dnsNames = new Set(['localhost']);
  const ips = new Map([['127.0.0.1', '127.0.0.1']]);
  const add = (name: string) => {
    // An IPv6 address with a zone id or an IPv4 part cannot go in a certificate: left out, like a wildcard.
    if (isIP(name) === 4 || (isIP(name) === 6 && !/[.%]/.test(name))) ips.set(canonicalIp(name), name);
    else if (DNS_NAME.test(name)) dnsNames.add(name.toLowerCase());
  };
  if (host === '::') add('::1');
  else if (host !== '0.0.0.0') add(host);
  names.forEach(add);
  const identity = await ensureLocalIdentity(
    ca,
    {
      profile: 'broker-server',
      identity: httpServerId(config.agent.id),
      dnsNames: [...dnsNames],
      ipAddresses: [...ips.values()],
      dir: join(config.agent.dataDir, 'identity'),
      basename: 'http-server',
    },
    log,
  );
  return { key: identity.key, cert: identity.cert };
}

function ownCertificate(certFile: string, keyFile: string, caDir: string, log: Logger): ListenerTls {
  const read = (file: string, key: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigFileError(`http.tls.${key} ${file}: cannot read: ${(err as Error).message}`, { cause: err });
    }
  };
  const cert = read(certFile, 'certFile');
  const key = read(keyFile, 'keyFile');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new ConfigFileError(`http.tls.certFile ${certFile}: not a PEM certificate`, { cause: err });
  }
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw new ConfigFileError(`http.tls.keyFile ${keyFile}: not an unencrypted PEM private key`, { cause: err });
  }
  if (!matches) throw new ConfigFileError(`http.tls.keyFile ${keyFile} is not the key of the certificate in ${certFile}`);
  // The agent's commands trust the gateway CA chain only: a certificate from elsewhere would lock them out.
  const cas = pemBlocks(gatewayCaChain(caDir)).map((b) => new X509Certificate(b.der));
  if (!cas.some((ca) => leaf.checkIssued(ca) && leaf.verify(ca.publicKey))) {
    throw new ConfigFileError(
      `http.tls.certFile ${certFile} was not issued by the gateway CA; ` +
        'issue one with edge-agent ca issue --profile broker-server --id <name> --dns <name> --generate-key --out <dir>',
    );
  }
  if (new Date(leaf.validTo) < new Date()) log.warn({ certFile, notAfter: leaf.validTo }, 'http.tls.certFile has expired: clients will refuse it');
  return { key, cert };
}
