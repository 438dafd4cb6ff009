import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from '../log.js';
import { destroySocket, firstDer, ProbeTimeout, within, type OpcuaProbe } from './opcuaProbe.js';

type Session = import('node-opcua-client').ClientSession;

/** Policies strong enough to carry SecurityAdmin credentials, strongest first (OPC 10000-7). */
const STRONG_POLICIES = ['Aes256_Sha256_RsaPss', 'Aes128_Sha256_RsaOaep', 'Basic256Sha256'];
const POLICY_URI = 'http://opcfoundation.org/UA/SecurityPolicy#';
const DEFAULT_GROUP = 'DefaultApplicationGroup';
/** RsaSha256ApplicationCertificateType. */
const RSA_SHA256_TYPE = 'i=12560';
/** OpenFileMode Write | EraseExisting. */
const WRITE_ERASE_EXISTING = 6;
/** TrustListMasks: TrustedCertificates | TrustedCrls | IssuerCertificates | IssuerCrls. */
const TRUST_LIST_ALL = 15;

export interface SecureEndpoint {
  securityPolicy: string;
  securityPolicyUri: string;
  /** The certificate the endpoint presents (DER, leaf only). */
  certificate: Buffer;
  /** SHA-1 of `certificate`, lower-case hex. */
  thumbprint: string;
}

export type EndpointChoice = { endpoint: SecureEndpoint } | { refusal: string };

export interface AdminUser {
  username: string;
  password: string;
}

/** What a push does on an open SecurityAdmin session; every call bounded by the step timeout. */
export interface PushCalls {
  /** Why the server cannot be pushed to (Part 12's methods absent or not executable), or undefined. */
  pushRefusal(): Promise<string | undefined>;
  createSigningRequest(subject: string): Promise<Buffer>;
  updateCertificate(certificate: Buffer, issuers: Buffer[]): Promise<{ applyChangesRequired: boolean }>;
  addTrusted(certificate: Buffer, trusted: boolean): Promise<void>;
  /** Writes CRLs into the TrustList and reads it back; false with the reason when the server takes none. */
  deliverCrls(crls: Buffer[]): Promise<{ delivered: boolean; detail: string }>;
  applyChanges(): Promise<void>;
}

export const thumbprintOf = (der: Buffer): string => createHash('sha1').update(der).digest('hex');

/**
 * The client side of OPC UA Part 12 push management, over node-opcua: the
 * endpoint to use (SignAndEncrypt, Basic256Sha256 or stronger, user names),
 * a SecurityAdmin session pinned to one server certificate, and the calls a
 * push makes. Credentials are only ever sent on such a session.
 */
export class OpcuaPushSessions {
  constructor(
    private readonly probe: OpcuaProbe,
    private readonly log: Logger,
  ) {}

  /** The strongest endpoint a SecurityAdmin session may use, or why there is none. */
  async secureEndpoint(url: string, timeoutMs: number): Promise<EndpointChoice> {
    return this.probe.withClient(url, timeoutMs, async (opcua, client) => {
      const endpoints = await within(client.getEndpoints(), timeoutMs, `GetEndpoints from ${url}`);
      const usable = endpoints.filter(
        (e) =>
          e.securityMode === opcua.MessageSecurityMode.SignAndEncrypt &&
          STRONG_POLICIES.includes((e.securityPolicyUri ?? '').replace(POLICY_URI, '')) &&
          (e.userIdentityTokens ?? []).some((t) => t.tokenType === opcua.UserTokenType.UserName) &&
          e.serverCertificate &&
          e.serverCertificate.length > 0,
      );
      usable.sort((a, b) => STRONG_POLICIES.indexOf(a.securityPolicyUri!.replace(POLICY_URI, '')) - STRONG_POLICIES.indexOf(b.securityPolicyUri!.replace(POLICY_URI, '')));
      const best = usable[0];
      if (!best) {
        const offered = [...new Set(endpoints.map((e) => `${opcua.MessageSecurityMode[e.securityMode]}/${(e.securityPolicyUri ?? '').replace(POLICY_URI, '')}`))].join(', ');
        return { refusal: `the server offers no SignAndEncrypt endpoint with ${STRONG_POLICIES.join(', ')} and user names (it offers ${offered || 'nothing'}); SecurityAdmin credentials are never sent over a weaker channel` };
      }
      const certificate = Buffer.from(firstDer(best.serverCertificate));
      const policy = best.securityPolicyUri!.replace(POLICY_URI, '');
      return { endpoint: { securityPolicy: policy, securityPolicyUri: best.securityPolicyUri!, certificate, thumbprint: thumbprintOf(certificate) } };
    });
  }

  /**
   * Opens a SecurityAdmin session to the server holding `endpoint.certificate`
   * (and no other): connecting is bounded by `timeoutMs`, and so is each
   * call made through it. `close()` always ends it.
   */
  async openAdminSession(url: string, endpoint: SecureEndpoint, user: AdminUser, timeoutMs: number): Promise<{ calls: PushCalls; close(): Promise<void> }> {
    const { opcua, client } = await this.probe.client(timeoutMs, { securityPolicyUri: endpoint.securityPolicyUri, serverCertificate: endpoint.certificate });
    let session: Session | undefined;
    const close = async () => {
      await Promise.race([(session as Session | undefined)?.close().catch(() => undefined), new Promise((r) => setTimeout(r, 500))]);
      await Promise.race([client.disconnect().catch(() => undefined), new Promise((r) => setTimeout(r, 500))]);
      destroySocket(client);
    };
    try {
      await within(client.connect(url), timeoutMs, `secure channel to ${url}`);
      session = await within(client.createSession({ type: opcua.UserTokenType.UserName, userName: user.username, password: user.password }), timeoutMs, `session on ${url}`);
      return { calls: await this.calls(session, timeoutMs), close };
    } catch (err) {
      if (err instanceof ProbeTimeout) destroySocket(client);
      await close();
      throw new Error(`no SecurityAdmin session as ${user.username}: ${describe(err)}`, { cause: err });
    }
  }

  async withAdminSession<T>(url: string, endpoint: SecureEndpoint, user: AdminUser, timeoutMs: number, work: (calls: PushCalls) => Promise<T>): Promise<T> {
    const session = await this.openAdminSession(url, endpoint, user, timeoutMs);
    try {
      return await work(session.calls);
    } finally {
      await session.close();
    }
  }

  private async calls(session: Session, timeoutMs: number): Promise<PushCalls> {
    const { ClientPushCertificateManagement } = await import('node-opcua-server-configuration');
    const push = new ClientPushCertificateManagement(session);
    const bounded = <R>(what: string, call: () => Promise<R>) => within(call(), timeoutMs, what);
    const good = (what: string, status: { isGood(): boolean; toString(): string }) => {
      if (!status.isGood()) throw new Error(`${what} answered ${status.toString()}`);
    };
    const trustList = async () => bounded('the TrustList', async () => (await push.getApplicationGroup()).getTrustList());
    return {
      pushRefusal: async () => {
        const methods = { CreateSigningRequest: 'i=12737', UpdateCertificate: 'i=13737', ApplyChanges: 'i=12740' };
        const values = await bounded('reading ServerConfiguration', () =>
          session.read(Object.values(methods).map((nodeId) => ({ nodeId, attributeId: 21 /* Executable */ }))),
        );
        const missing = Object.keys(methods).filter((_, i) => values[i]?.statusCode.isGood() !== true || values[i]?.value.value !== true);
        return missing.length === 0 ? undefined : `ServerConfiguration's ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} absent or not executable`;
      },
      createSigningRequest: async (subject) => {
        // A new key, with 32 bytes of our entropy as Part 12 asks (fewer is refused by some servers).
        const r = await bounded('CreateSigningRequest', () => push.createSigningRequest(DEFAULT_GROUP, RSA_SHA256_TYPE, subject, true, randomBytes(32)));
        good('CreateSigningRequest', r.statusCode);
        if (!r.certificateSigningRequest || r.certificateSigningRequest.length === 0) throw new Error('CreateSigningRequest returned no CSR');
        return Buffer.from(r.certificateSigningRequest);
      },
      updateCertificate: async (certificate, issuers) => {
        const r = await bounded('UpdateCertificate', () => push.updateCertificate(DEFAULT_GROUP, RSA_SHA256_TYPE, certificate, issuers));
        good('UpdateCertificate', r.statusCode);
        return { applyChangesRequired: r.applyChangesRequired !== false };
      },
      addTrusted: async (certificate, trusted) => {
        const list = await trustList();
        good(`TrustList.AddCertificate (${trusted ? 'trusted' : 'issuer'})`, await bounded('TrustList.AddCertificate', () => list.addCertificate(certificate, trusted)));
      },
      deliverCrls: async (crls) => {
        try {
          const list = await trustList();
          const { TrustListDataType } = await import('node-opcua-types');
          const { BinaryStream } = await import('node-opcua-binary-stream');
          const current = await bounded('TrustList read', () => list.readTrustedCertificateListWithMasks(TRUST_LIST_ALL));
          const known = new Set((current.issuerCrls ?? []).map((c) => thumbprintOf(Buffer.from(c))));
          const wanted = crls.filter((c) => !known.has(thumbprintOf(c)));
          if (wanted.length === 0) return { delivered: true, detail: `the TrustList already holds our ${crls.length} CRL(s)` };
          // The whole list is written back with ours added (Part 12 7.8.2: Open for WriteEraseExisting, Write, CloseAndUpdate).
          const next = new TrustListDataType({ ...current, specifiedLists: TRUST_LIST_ALL, issuerCrls: [...(current.issuerCrls ?? []), ...wanted] });
          const stream = new BinaryStream(next.binaryStoreSize());
          next.encode(stream);
          await bounded('TrustList write', async () => {
            await list.open(WRITE_ERASE_EXISTING);
            await list.write(stream.buffer);
            await list.closeAndUpdate(true);
          });
          const back = await bounded('TrustList read back', () => list.readTrustedCertificateListWithMasks(TRUST_LIST_ALL));
          const held = new Set((back.issuerCrls ?? []).map((c) => thumbprintOf(Buffer.from(c))));
          const missing = crls.filter((c) => !held.has(thumbprintOf(c))).length;
          return missing === 0
            ? { delivered: true, detail: `written to the TrustList and read back: it holds our ${crls.length} CRL(s)` }
            : { delivered: false, detail: `the server took the TrustList write but holds ${crls.length - missing} of our ${crls.length} CRLs when read back: CRLs cannot be delivered to it; install them by hand` };
        } catch (err) {
          return { delivered: false, detail: `the server's TrustList takes no CRLs (${describe(err)}): install them by hand` };
        }
      },
      applyChanges: async () => good('ApplyChanges', await bounded('ApplyChanges', () => push.applyChanges())),
    };
  }

  /**
   * After ApplyChanges: waits (up to `waitMs`) until the server's endpoints
   * present `certificate`, then opens a SecurityAdmin session pinned to it,
   * which succeeds only if the server holds its key. Rejects with what the
   * server presented when it never does.
   */
  async waitForCertificate(url: string, certificate: Buffer, user: AdminUser, timeoutMs: number, waitMs: number): Promise<void> {
    const deadline = Date.now() + waitMs;
    let last: unknown;
    for (let attempt = 1; Date.now() < deadline; attempt++) {
      try {
        const choice = await this.secureEndpoint(url, timeoutMs);
        if ('refusal' in choice) throw new Error(choice.refusal);
        // Until the server restarts its endpoints it may still present the certificate it had.
        if (choice.endpoint.thumbprint !== thumbprintOf(certificate)) throw new Error(`the server presents certificate ${choice.endpoint.thumbprint}, not ${thumbprintOf(certificate)}`);
        await this.withAdminSession(url, choice.endpoint, user, timeoutMs, async () => undefined);
        return;
      } catch (err) {
        last = err;
        this.log.debug({ url, attempt, err: describe(err) }, 'server not back yet after ApplyChanges');
        // A refused local connection costs little: look often, the server comes back about 2 s after ApplyChanges.
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    throw new Error(`within ${waitMs} ms the server did not present its new certificate on a session: ${describe(last)}`);
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0]!.trim() : String(err);
}
