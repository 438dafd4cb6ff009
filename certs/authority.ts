import { createHash, X509Certificate } from 'node:crypto';
import { buildCrl } from './crl.js';
import { CertError } from './errors.js';
import type { IssuerName, IssuingCa } from './issuer.js';
import { lintTbs } from './lint.js';
import { profileNamed, type ProfileName } from './profiles/index.js';
import type { IdentityRequest, RequestOrigin } from './profiles/profile.js';
import { PreparedRequest } from './request.js';
import type { CertificateRecord, CertificateStore, RevocationReason } from './store.js';
import { assembleCertificate, encodeTbs, randomSerial } from './x509/certificate.js';
import {
  basicConstraints,
  extKeyUsage,
  keyIdentifier,
  keyUsage,
  subjectAltName,
  subjectKeyIdentifier,
  canonicalIp,
  type SubjectAltNames,
} from './x509/extensions.js';
import { encodeName, type NameAttributes } from './x509/name.js';
import { toPem } from './x509/pem.js';

export interface IssueRequest extends IdentityRequest {
  profile: ProfileName | string;
  /**
   * The request prepared once (`prepare()`: parsed, proof of possession
   * verified), which the authority reads without parsing again. A PKCS#10
   * PEM or DER is accepted for callers that hold nothing else (a library
   * user, a test) and is prepared here, once.
   */
  csr: PreparedRequest | string | Buffer;
  /** Who names the identity (default `operator`): the profile's validators judge a requester's own names. */
  origin?: RequestOrigin;
  /**
   * Work recorded in the same durable commit as this issuance's answer
   * (the outcome of the request it answers): with the new certificate, or,
   * for a repeated request, in a commit of its own with the certificate
   * issued before. If it throws, nothing of it or of the new certificate is
   * recorded, and issue() rejects with its error; a signed certificate that
   * is not recorded never leaves the process.
   */
  alongside?: (record: CertificateRecord) => void;
  /**
   * Issue a new certificate even if the identity holds a valid one for the
   * same key (renewal with key reuse, when policy allows). Without it, the
   * same request twice returns the certificate already issued.
   */
  renew?: boolean;
}

export interface IssuedCertificate {
  record: CertificateRecord;
  /** The issuing CA first, then the CAs above it (PEM). */
  chain: string[];
  /** The serial of the certificate this one superseded, if any. */
  supersedes?: string;
  /** True when this answers a repeated request with the certificate issued before. */
  repeated?: boolean;
}

export interface AuthorityOptions {
  issuers: Partial<Record<IssuerName, IssuingCa>>;
  store: CertificateStore;
  organization: string;
  validityDays: Record<ProfileName, number>;
  /** Whether a renewal may keep the key of the certificate it replaces. */
  allowKeyReuse: boolean;
  /** Backdating of notBefore, for devices whose clocks run a little behind. */
  backdateMs?: number;
  now?: () => Date;
}

const DAY = 86_400_000;

const SUBJECT_LABELS: Record<string, string> = { country: 'C', organization: 'O', organizationalUnit: 'OU', commonName: 'CN', serialNumber: 'serialNumber' };

/** "O=Plant, CN=pump-1": the subject as recorded. */
export function describeSubject(subject: NameAttributes): string {
  return Object.entries(subject)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${SUBJECT_LABELS[k] ?? k}=${String(v)}`)
    .join(', ');
}

/** "URI:…, DNS:…, IP:…": the SAN as recorded, in the form it is encoded (DNS lower-cased, IPs canonical). */
export function describeSan(san: SubjectAltNames | undefined): string {
  if (!san) return '';
  return [
    ...(san.uris ?? []).map((u) => `URI:${u}`),
    ...(san.dnsNames ?? []).map((d) => `DNS:${d.toLowerCase()}`),
    ...(san.ipAddresses ?? []).map((i) => `IP:${canonicalIp(i)}`),
  ].join(', ');
}

/**
 * The canonical form of a serial: lower-case hex of its magnitude, even
 * length. Accepts what people paste: upper case, colons (openssl), 0x.
 */
export function normaliseSerial(input: string): string {
  const hex = input.trim().toLowerCase().replace(/^0x/, '').replace(/:/g, '');
  if (!/^[0-9a-f]{1,64}$/.test(hex)) throw new CertError('REQUEST_INVALID', `${JSON.stringify(input)} is not a serial number in hex`);
  const stripped = hex.replace(/^0+(?=.)/, '');
  return stripped.length % 2 === 0 ? stripped : `0${stripped}`;
}

/**
 * Issues, renews and revokes. Issuance is one pipeline whatever the profile,
 * from a prepared request (parsed and proof of possession verified once,
 * certs/request.ts): check the key type the profile allows, build from the
 * profile's template, run the profile's validators, refuse CA requests or a
 * key bound to another identity, lint the encoding, sign, record durably
 * (with the caller's `alongside` work in the same commit), and only then
 * return.
 */
export class CertificateAuthority {
  private readonly now: () => Date;

  constructor(private readonly options: AuthorityOptions) {
    this.now = options.now ?? (() => new Date());
  }

  issuer(name: IssuerName): IssuingCa {
    const issuer = this.options.issuers[name];
    if (!issuer)
      throw new CertError(
        'CA_NOT_INITIALISED',
        `the ${name.toUpperCase()} issuing CA is not set up; run edge-agent ca init (or import-intermediate --issuer ${name})`,
      );
    return issuer;
  }

  async issue(request: IssueRequest): Promise<IssuedCertificate> {
    const profile = profileNamed(request.profile);
    const csr = request.csr instanceof PreparedRequest ? request.csr : PreparedRequest.from(request.csr);
    const keyType = csr.publicKey.type;
    if (!profile.allowedKeys.includes(keyType)) {
      throw new CertError('KEY_TYPE_NOT_ALLOWED', `profile ${profile.name} does not accept ${keyType} keys; it accepts ${profile.allowedKeys.join(', ')}`);
    }
    const template = profile.template(request, keyType, this.options.organization);
    profile.validate?.(csr, { ...request, origin: request.origin ?? 'operator' });
    if ((csr.requested.ca || csr.requested.certSign) && profile.onCaRequest === 'reject') {
      throw new CertError('CSR_REQUESTS_CA', `the CSR asks to be a CA (CA:TRUE or keyCertSign); profile ${profile.name} issues only end-entity certificates`);
    }

    const { store } = this.options;
    const key = csr.publicKey.sha256;
    // Early refusals spare the signature; record() makes the same checks again inside the commit.
    if (store.keyCompromised(key)) {
      throw new CertError('KEY_COMPROMISED', 'a certificate for this public key was revoked for key compromise; the device needs a new key pair');
    }
    const binding = store.keyBinding(key);
    if (binding && binding.identity !== request.identity) {
      throw new CertError(
        'KEY_BOUND_TO_OTHER_IDENTITY',
        `clone alert: this public key is already bound to ${binding.profile} identity ${JSON.stringify(binding.identity)}`,
        { details: { boundTo: binding.identity, requested: request.identity, spkiSha256: key } },
      );
    }
    const subject = describeSubject(template.subject);
    const san = describeSan(template.san);
    // Only a key seen before can be a repeat or a reuse: the lookup is skipped for new keys.
    const previous = binding ? store.current(profile.name, request.identity) : undefined;
    if (previous && previous.spkiSha256 === key && previous.subject === subject && previous.san === san && !request.renew && this.stillGood(previous)) {
      // The same request again (its answer was lost on the way): hand out what was issued, issue nothing new.
      if (request.alongside) store.commit(() => request.alongside!(previous));
      return { record: previous, chain: this.issuer(previous.issuer).chainPem, repeated: true };
    }
    if (binding && !this.options.allowKeyReuse) {
      throw new CertError(
        'KEY_REUSE_NOT_ALLOWED',
        `identity ${JSON.stringify(request.identity)} already had a certificate for this key; a new certificate needs a new key pair`,
      );
    }

    const issuerName: IssuerName = profile.issuer === 'by-key' ? (keyType === 'rsa' ? 'rsa' : 'ec') : profile.issuer;
    const issuer = this.issuer(issuerName);
    const now = this.now();
    if (issuer.chainNotAfter <= now)
      throw new CertError('CA_EXPIRED', `the ${issuerName} issuing CA (or a CA above it) expired on ${issuer.chainNotAfter.toISOString()}`);
    const notBefore = new Date(Math.max(now.getTime() - (this.options.backdateMs ?? 300_000), issuer.notBefore.getTime()));
    notBefore.setUTCMilliseconds(0);
    // Never past the issuing CA, nor past any CA above it: the certificate would not validate then.
    const wanted = new Date(now.getTime() + this.options.validityDays[profile.name] * DAY);
    const notAfter = wanted < issuer.chainNotAfter ? wanted : new Date(issuer.chainNotAfter);
    notAfter.setUTCMilliseconds(0);

    const extensions = [
      basicConstraints(false),
      keyUsage(template.keyUsage),
      extKeyUsage(template.extKeyUsage),
      subjectKeyIdentifier(keyIdentifier(csr.publicKey.keyBits)),
      issuer.aki,
      ...(template.san ? [subjectAltName(template.san)] : []),
    ];
    const subjectName = encodeName(template.subject);
    for (let attempt = 0; ; attempt++) {
      const serial = randomSerial();
      const tbs = encodeTbs({
        serial,
        signatureAlgorithm: issuer.signatureAlgorithm,
        issuerName: issuer.subjectName,
        notBefore,
        notAfter,
        subjectName,
        spki: csr.publicKey.spki,
        extensions,
      });
      lintTbs(tbs, notBefore, notAfter, profile, template, issuer);
      const der = assembleCertificate(tbs, issuer.signatureAlgorithm, issuer.key.sign(tbs));
      const record: CertificateRecord = {
        serial: serial.toString('hex'),
        issuer: issuerName,
        profile: profile.name,
        identity: request.identity,
        subject,
        san,
        notBefore,
        notAfter,
        thumbprint: createHash('sha256').update(der).digest('hex'),
        spkiSha256: key,
        pem: toPem('CERTIFICATE', der),
        status: 'valid',
        issuedAt: now,
      };
      let recorded: { supersedes?: string; repeated?: CertificateRecord };
      try {
        recorded = await store.record(record, { allowKeyReuse: this.options.allowKeyReuse, renew: request.renew === true }, request.alongside);
      } catch (err) {
        // 2^-128 per pair: retried once so a collision can never surface as a failure.
        if (err instanceof CertError && err.code === 'SERIAL_COLLISION' && attempt === 0) continue;
        throw err;
      }
      if (recorded.repeated) {
        // A concurrent twin of this request was recorded first: this certificate is dropped unseen.
        return { record: recorded.repeated, chain: this.issuer(recorded.repeated.issuer).chainPem, repeated: true };
      }
      return { record, chain: issuer.chainPem, ...(recorded.supersedes ? { supersedes: recorded.supersedes } : {}) };
    }
  }

  /**
   * Revokes durably (for keyCompromise: every certificate of that key); the
   * caller then publishes the new CRL (`crls()`).
   */
  revoke(serial: string, reason: RevocationReason): { revoked: CertificateRecord; alsoRevoked: CertificateRecord[] } {
    return this.options.store.revoke(normaliseSerial(serial), reason, this.now());
  }

  /** A fresh CRL per issuing CA, each with the next CRL number, valid for `validityHours`. */
  crls(validityHours: number): { issuer: IssuerName; pem: string; der: Buffer; nextUpdate: Date; crlNumber: number }[] {
    const thisUpdate = this.now();
    thisUpdate.setUTCMilliseconds(0);
    const nextUpdate = new Date(thisUpdate.getTime() + validityHours * 3_600_000);
    return (Object.values(this.options.issuers) as IssuingCa[]).map((issuer) => {
      const crlNumber = this.options.store.nextCrlNumber(issuer.name);
      const revoked = this.options.store.revokedBy(issuer.name, thisUpdate);
      return { issuer: issuer.name, ...buildCrl(issuer, revoked, crlNumber, thisUpdate, nextUpdate), nextUpdate, crlNumber };
    });
  }

  /** A certificate may be handed out again only while it is valid and its issuing CA is still the one in use. */
  private stillGood(record: CertificateRecord): boolean {
    const issuer = this.options.issuers[record.issuer];
    if (!issuer || record.notAfter <= this.now()) return false;
    return new X509Certificate(record.pem).verify(issuer.key.publicKey);
  }

  /** Every issuing CA and the CAs above them, each once (PEM): what a peer must trust. */
  trustBundle(): string[] {
    const seen = new Set<string>();
    return this.issuers()
      .flatMap((i) => i.chainPem)
      .filter((pem) => !seen.has(pem) && seen.add(pem));
  }

  issuers(): IssuingCa[] {
    return Object.values(this.options.issuers) as IssuingCa[];
  }
}
