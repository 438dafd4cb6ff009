import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { Counter, Gauge } from 'prom-client';
import type { CertificateAuthority, IssuedCertificate, IssueRequest } from '../../certs/authority.js';
import { loadRoot, refreshRootCrl, type RootCa } from '../../certs/root.js';
import { crlIssuerName } from '../../certs/crl.js';
import { CertError } from '../../certs/errors.js';
import { parseCertificate } from '../../certs/x509/certificate.js';
import { pemBlocks } from '../../certs/x509/pem.js';
import type { ProfileName } from '../../certs/profiles/profile.js';
import type { CertificateRecord, RevocationReason } from '../../certs/store.js';
import type { Config } from '../config/schema.js';
import { InternalError } from '../errors.js';
import type { EventBus } from '../events.js';
import type { Service } from '../lifecycle/service.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { CertificateRepository } from '../store/certificateRepository.js';
import { caExists, checkKeyFilePermissions, initFromConfig, loadAuthority, publishCrlFile, unencryptedKeyFiles, weaklyEncryptedKeyFiles } from './loadCa.js';
import { resolvePassphrase } from './passphrase.js';

/**
 * CRLs are regenerated at half their validity, and at least daily: a
 * setTimeout longer than 2^31 ms (24.8 days, ca.crlValidityHours can be a
 * year) would fire at once and loop.
 */
const MAX_CRL_REFRESH_MS = 86_400_000;

export interface CaDeps {
  log: Logger;
  config: Config['ca'];
  gatewayId: string;
  certificates: CertificateRepository;
  metrics: Metrics;
  bus: EventBus;
  env: NodeJS.ProcessEnv;
}

/**
 * The gateway's CA inside the daemon: creates the hierarchy on first start
 * (ca.autoInit), loads and checks the keys, keeps the CRL file fresh
 * (regenerated on every revocation and at half of its validity), hands the
 * CRL and chain to the API (GET /ca/crl, /ca/chain in api/caRoutes.ts), and
 * announces certificates past two thirds of their lifetime.
 */
export class CaService implements Service {
  readonly name = 'ca';
  private authority: CertificateAuthority | undefined;
  private repository: CertificateRepository | undefined;
  private passphrase: string | undefined;
  private config: Config['ca'];
  private crlTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private readonly issued: Counter<'profile'>;
  private readonly revoked: Counter;
  private readonly renewalDue: Gauge;
  private readonly crlNextUpdate: Gauge;

  constructor(private readonly deps: CaDeps) {
    this.config = deps.config;
    const registers = [deps.metrics.registry];
    this.issued = new Counter({ name: 'edge_agent_certificates_issued_total', help: 'Certificates issued, by profile', labelNames: ['profile'], registers });
    this.revoked = new Counter({ name: 'edge_agent_certificates_revoked_total', help: 'Certificates revoked', registers });
    this.renewalDue = new Gauge({ name: 'edge_agent_certificates_renewal_due', help: 'Valid certificates past two thirds of their lifetime', registers });
    this.crlNextUpdate = new Gauge({ name: 'edge_agent_crl_next_update_timestamp_seconds', help: 'nextUpdate of the published CRLs (Unix time)', registers });
  }

  /** Whether the hierarchy is loaded (between start and stop). */
  get loaded(): boolean {
    return this.authority !== undefined;
  }

  /** The published CRL file as it is on disk (PEM), or undefined before the first is written. */
  publishedCrl(): Buffer | undefined {
    return existsSync(this.config.crlFile) ? readFileSync(this.config.crlFile) : undefined;
  }

  async start(): Promise<void> {
    const { log } = this.deps;
    this.passphrase = resolvePassphrase(this.config, this.deps.env);
    if (!caExists(this.config.dir)) {
      if (!this.config.autoInit) {
        throw new CertError('CA_NOT_INITIALISED', `no CA in ${this.config.dir} and ca.autoInit is false; run edge-agent ca init or import an intermediate`);
      }
      initFromConfig(this.config, this.deps.gatewayId, this.passphrase);
      log.info({ dir: this.config.dir, encrypted: this.passphrase !== undefined }, 'CA hierarchy created');
    }
    if (this.passphrase === undefined) log.warn({ dir: this.config.dir }, 'CA keys are stored unencrypted: set ca.passphraseFile or EDGE_AGENT_CA_PASSPHRASE');
    else {
      for (const file of unencryptedKeyFiles(this.config.dir)) {
        log.warn({ file }, 'CA key is stored unencrypted although a passphrase is configured; encrypt it with edge-agent ca passphrase');
      }
    }
    for (const { file, scheme, iterations, prf } of weaklyEncryptedKeyFiles(this.config.dir)) {
      log.warn(
        { file, scheme, iterations, prf },
        'CA key is encrypted with a weak work factor: re-encrypt it with edge-agent ca passphrase --keep-passphrase (agent stopped)',
      );
    }
    // Exposed keys are refused before any passphrase work; then, where the root key is on the gateway,
    // it must belong to root.crt: refused now, not found out when it next signs.
    checkKeyFilePermissions(this.config.dir);
    const root = loadRoot(this.config.dir, this.passphrase);
    // Read through only once the CA is loaded: before that, lookups find nothing.
    this.repository = this.deps.certificates;
    this.authority = loadAuthority(this.config, this.repository, this.passphrase);
    for (const issuer of this.authority.issuers()) {
      log.info({ issuer: issuer.name, notAfter: issuer.notAfter.toISOString() }, 'issuing CA loaded');
    }
    this.publishCrl(() => root);
    this.checkExpiry();
    this.expiryTimer = setInterval(() => this.checkExpiry(), this.config.expiryCheckIntervalMs);
  }

  /** Every issuing CA, then the CAs above them, each once (PEM). */
  chainPem(): string {
    return this.ca().trustBundle().join('');
  }

  private ca(): CertificateAuthority {
    if (!this.authority) throw new InternalError('the CA is not loaded');
    return this.authority;
  }

  /** A certificate by serial, with the chain of its issuer (issuing CA first). */
  certificate(serial: string): { record: CertificateRecord; chain: string[] } | undefined {
    const record = this.repository?.get(serial);
    return record ? { record, chain: this.ca().issuer(record.issuer).chainPem } : undefined;
  }

  /** The certificate this CA issued with this DER, if any (any status). */
  issuedAs(der: Buffer): CertificateRecord | undefined {
    return this.repository?.byThumbprint(createHash('sha256').update(der).digest('hex'));
  }

  /** Every certificate of an identity under a profile not revoked and not expired (the valid one, and any it superseded). */
  unrevoked(profile: ProfileName, identity: string): CertificateRecord[] {
    const now = new Date();
    return (this.repository?.list({ profile, identity }) ?? []).filter((r) => r.status !== 'revoked' && r.notAfter > now);
  }

  /** The valid certificate of an identity under a profile, if any. */
  current(profile: ProfileName, identity: string): CertificateRecord | undefined {
    return this.repository?.current(profile, identity);
  }

  /** Identities of a profile whose certificates are all revoked (what the CRL refuses). */
  revokedIdentities(profile: ProfileName): string[] {
    return this.repository?.revokedIdentities(profile) ?? [];
  }

  async issue(request: IssueRequest): Promise<IssuedCertificate> {
    const issued = await this.ca().issue(request);
    if (!issued.repeated) {
      this.issued.inc({ profile: issued.record.profile });
      this.deps.log.info(
        { serial: issued.record.serial, profile: issued.record.profile, identity: issued.record.identity, supersedes: issued.supersedes },
        'certificate issued',
      );
      this.deps.bus.emit('certificate.issued', {
        serial: issued.record.serial,
        profile: issued.record.profile,
        identity: issued.record.identity,
        notAfter: issued.record.notAfter,
      });
    }
    return issued;
  }

  /**
   * Revokes (durably; for keyCompromise every certificate of the key), then
   * publishes the new CRL; a CRL that cannot be written is retried, the
   * revocation stands.
   */
  revoke(serial: string, reason: RevocationReason): CertificateRecord[] {
    const { revoked, alsoRevoked } = this.ca().revoke(serial, reason);
    const all = [revoked, ...alsoRevoked];
    for (const record of all) {
      this.revoked.inc();
      this.deps.log.warn({ serial: record.serial, identity: record.identity, reason }, 'certificate revoked');
    }
    this.publishCrlOrRetry();
    for (const record of all) {
      this.deps.bus.emit('certificate.revoked', { serial: record.serial, profile: record.profile, identity: record.identity, reason });
    }
    return all;
  }

  /**
   * The RSA issuing CA and the CAs above it (DER), for OPC UA peers'
   * trust lists; undefined when one of them has a key other than RSA (an EC
   * root): node-opcua cannot verify such a chain and fails on it.
   */
  opcuaChain(): Buffer[] | undefined {
    const chain = this.ca()
      .issuers()
      .find((i) => i.name === 'rsa')
      ?.chainPem.map((pem) => new X509Certificate(pem));
    if (!chain || chain.some((c) => c.publicKey.asymmetricKeyType !== 'rsa')) return undefined;
    return chain.map((c) => c.raw);
  }

  /**
   * The gateway CA as an OPC UA server's TrustList should hold it (DER): the
   * RSA issuing CA as trusted, the CAs above it as issuers, each with its
   * published CRL.
   */
  opcuaTrust(): { trusted: Buffer[]; trustedCrls: Buffer[]; issuers: Buffer[]; issuerCrls: Buffer[] } {
    const chain = this.ca()
      .issuer('rsa')
      .chainPem.map((pem) => new X509Certificate(pem).raw);
    const crls = this.crlDers();
    const crlsOf = (ca: Buffer) => {
      const name = parseCertificate(ca).subjectName;
      return crls.filter((crl) => crlIssuerName(crl).equals(name));
    };
    return { trusted: chain.slice(0, 1), trustedCrls: crlsOf(chain[0]!), issuers: chain.slice(1), issuerCrls: chain.slice(1).flatMap(crlsOf) };
  }

  /** The published CRLs (each issuing CA's, then the root's), DER: what an OPC UA TrustList takes. */
  crlDers(): Buffer[] {
    if (!existsSync(this.config.crlFile)) return [];
    return pemBlocks(readFileSync(this.config.crlFile, 'utf8'))
      .filter((b) => b.label === 'X509 CRL')
      .map((b) => b.der);
  }

  /**
   * Signs the root CRL again when it is due (with the root key, read from
   * disk unless given), writes a fresh CRL per issuing CA into ca.crlFile
   * followed by the root's, and schedules the next one at half its validity.
   */
  publishCrl(rootKey: () => RootCa | undefined = () => loadRoot(this.config.dir, this.passphrase)): void {
    this.refreshRootCrl(rootKey);
    const { nextUpdate, crlNumbers } = publishCrlFile(this.ca(), this.config);
    this.crlNextUpdate.set(nextUpdate.getTime() / 1000);
    this.deps.log.info({ file: this.config.crlFile, crlNumbers, nextUpdate: nextUpdate.toISOString() }, 'CRL published');
    clearTimeout(this.crlTimer);
    this.crlTimer = setTimeout(() => this.publishCrlOrRetry(), Math.min((this.config.crlValidityHours * 3_600_000) / 2, MAX_CRL_REFRESH_MS));
  }

  /** The root CRL lists revoked issuing CAs; a root key that cannot be read only delays it (with an error logged). */
  private refreshRootCrl(rootKey: () => RootCa | undefined): void {
    const { log } = this.deps;
    try {
      const r = refreshRootCrl(this.config.dir, this.config.rootCrlValidityDays, rootKey);
      if (r.status === 'written') log.info({ nextUpdate: r.nextUpdate.toISOString(), reason: r.reason }, 'root CRL signed');
      if (r.status === 'offline') {
        log.warn(
          { nextUpdate: r.nextUpdate?.toISOString(), reason: r.reason },
          'root CRL is due to be signed again and the root key is not on the gateway: bring it back and run edge-agent ca crl',
        );
      }
    } catch (err) {
      log.error({ err, dir: this.config.dir }, 'root CRL could not be signed again');
    }
  }

  /** publishCrl, and on failure a log line and another try a minute later, for as long as it takes. */
  private publishCrlOrRetry(): void {
    try {
      this.publishCrl();
    } catch (err) {
      this.deps.log.error({ err, file: this.config.crlFile }, 'CRL could not be written; retrying in a minute');
      clearTimeout(this.crlTimer);
      this.crlTimer = setTimeout(() => this.publishCrlOrRetry(), 60_000);
    }
  }

  private checkExpiry(): void {
    if (!this.repository) return;
    const now = new Date();
    for (const r of this.repository.takeRenewalDue(now)) {
      this.deps.log.warn(
        { serial: r.serial, profile: r.profile, identity: r.identity, notAfter: r.notAfter.toISOString() },
        'certificate past two thirds of its lifetime: renew it',
      );
      this.deps.bus.emit('certificate.expiring', { serial: r.serial, profile: r.profile, identity: r.identity, notAfter: r.notAfter });
    }
    this.renewalDue.set(this.repository.countRenewalDue(now));
  }

  reload(config: Config): void {
    const crlChanged = config.ca.crlValidityHours !== this.config.crlValidityHours || config.ca.rootCrlValidityDays !== this.config.rootCrlValidityDays;
    this.config = config.ca;
    if (!this.repository) return;
    if (crlChanged) this.publishCrl();
    this.authority = loadAuthority(this.config, this.repository, this.passphrase);
    clearInterval(this.expiryTimer);
    this.expiryTimer = setInterval(() => this.checkExpiry(), this.config.expiryCheckIntervalMs);
  }

  async stop(): Promise<void> {
    clearTimeout(this.crlTimer);
    clearInterval(this.expiryTimer);
    this.authority = undefined;
  }
}
