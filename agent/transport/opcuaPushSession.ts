import { createHash, randomBytes } from 'node:crypto';
import { crlIssuerName } from '../../certs/crl.js';
import { parseCertificate } from '../../certs/x509/certificate.js';
import type { Logger } from '../log.js';
import { abandonConnect, closeClient, firstDer, ProbeTimeout, within, type OpcuaProbe } from './opcuaProbe.js';
import { ChannelRefusedError, watchRefusal } from './opcuaRefusal.js';
import { PeerError } from '../errors.js';

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
  /**
   * Makes the server's TrustList hold the gateway CA: the issuing CA as
   * trusted, the CAs above it as issuers, each with its CRL (older CRLs of
   * the same CAs replaced). The whole TrustList is written (Part 12 7.8.2:
   * Open, Write, CloseAndUpdate) and read back; a server whose TrustList
   * takes no writes gets the certificates by AddCertificate instead, and no
   * CRLs. Fails when the issuing CA is not in the TrustList afterwards.
   */
  installTrust(ca: GatewayTrust): Promise<TrustOutcome>;
  applyChanges(): Promise<void>;
}

export const thumbprintOf = (der: Buffer): string => createHash('sha1').update(der).digest('hex');

/** The gateway CA as an OPC UA server must trust it (DER). */
export interface GatewayTrust {
  trusted: Buffer[];
  trustedCrls: Buffer[];
  issuers: Buffer[];
  issuerCrls: Buffer[];
}

export interface TrustOutcome {
  /** already: nothing to do; write: the TrustList was written; add: AddCertificate, the TrustList takes no writes. */
  method: 'already' | 'write' | 'add';
  crlDelivered: boolean;
  /** Whether ApplyChanges is needed for the TrustList change to take effect. */
  applyChangesRequired: boolean;
  detail: string;
}

interface TrustLists {
  trustedCertificates?: (Buffer | Uint8Array)[] | null;
  trustedCrls?: (Buffer | Uint8Array)[] | null;
  issuerCertificates?: (Buffer | Uint8Array)[] | null;
  issuerCrls?: (Buffer | Uint8Array)[] | null;
}

const prints = (list: readonly (Buffer | Uint8Array)[] | null | undefined) => new Set((list ?? []).map((b) => thumbprintOf(Buffer.from(b))));
const holds = (list: readonly (Buffer | Uint8Array)[] | null | undefined, wanted: readonly Buffer[]) => {
  const have = prints(list);
  return wanted.every((w) => have.has(thumbprintOf(w)));
};
/** What of `ca` the TrustList `t` lacks, in words; empty when it holds everything. */
function lacking(t: TrustLists, ca: GatewayTrust): { certificates: boolean; crls: boolean } {
  // The issuing CA must be trusted; a CA above it and the CRLs count wherever the TrustList holds them (a validator looks in both lists).
  const certificates = [...(t.trustedCertificates ?? []), ...(t.issuerCertificates ?? [])];
  const crls = [...(t.trustedCrls ?? []), ...(t.issuerCrls ?? [])];
  return {
    certificates: !holds(t.trustedCertificates, ca.trusted) || !holds(certificates, ca.issuers),
    crls: !holds(crls, [...ca.trustedCrls, ...ca.issuerCrls]),
  };
}

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
    // One budget for the hello, the channel and GetEndpoints: a server that hangs costs it once.
    return this.probe.withClient(url, timeoutMs, async (opcua, client, deadline) => {
      const endpoints = await deadline.within(client.getEndpoints(), `GetEndpoints from ${url}`);
      const usable = endpoints.filter(
        (e) =>
          e.securityMode === opcua.MessageSecurityMode.SignAndEncrypt &&
          STRONG_POLICIES.includes((e.securityPolicyUri ?? '').replace(POLICY_URI, '')) &&
          (e.userIdentityTokens ?? []).some((t) => t.tokenType === opcua.UserTokenType.UserName) &&
          e.serverCertificate &&
          e.serverCertificate.length > 0,
      );
      usable.sort(
        (a, b) => STRONG_POLICIES.indexOf(a.securityPolicyUri!.replace(POLICY_URI, '')) - STRONG_POLICIES.indexOf(b.securityPolicyUri!.replace(POLICY_URI, '')),
      );
      const best = usable[0];
      if (!best) {
        const offered = [
          ...new Set(endpoints.map((e) => `${opcua.MessageSecurityMode[e.securityMode]}/${(e.securityPolicyUri ?? '').replace(POLICY_URI, '')}`)),
        ].join(', ');
        return {
          refusal:
            `the server offers no SignAndEncrypt endpoint with ${STRONG_POLICIES.join(', ')} and user names (it offers ${offered || 'nothing'}); ` +
            'SecurityAdmin credentials are never sent over a weaker channel',
        };
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
    // Pinned: with serverCertificate given and no reconnection (maxRetry 0 in probe.client), node-opcua
    // encrypts to this certificate only and never fetches another one to accept.
    const { opcua, client } = await this.probe.client(timeoutMs, { securityPolicyUri: endpoint.securityPolicyUri, serverCertificate: endpoint.certificate });
    const refusal = watchRefusal(opcua, client);
    let session: Session | undefined;
    let channelOpen = false;
    const close = () => closeClient(client, session);
    const connecting = client.connect(url);
    try {
      await within(connecting, timeoutMs, `secure channel to ${url}`);
      channelOpen = true;
      session = await within(
        client.createSession({ type: opcua.UserTokenType.UserName, userName: user.username, password: user.password }),
        timeoutMs,
        `session on ${url}`,
      );
      return { calls: await this.calls(session, timeoutMs), close };
    } catch (err) {
      if (err instanceof ProbeTimeout) abandonConnect(client, connecting);
      await close();
      // The server's own reason, where it gave one: node-opcua's message for a refused channel says nothing.
      const refused = channelOpen ? undefined : refusal();
      if (refused)
        throw new ChannelRefusedError(
          `no SecurityAdmin session as ${user.username}: the server refused the secure channel with ${refused.statusName}`,
          refused.status,
          refused.statusName,
          { cause: err },
        );
      throw new PeerError('OPCUA_SERVER_ERROR', `no SecurityAdmin session as ${user.username}: ${describe(err)}`, { cause: err });
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
    const opcua = await import('node-opcua-client');
    const push = new ClientPushCertificateManagement(session);
    const bounded = <R>(what: string, call: () => Promise<R>) => within(call(), timeoutMs, what);
    const good = (what: string, status: { isGood(): boolean; toString(): string }) => {
      if (!status.isGood()) throw new PeerError('OPCUA_SERVER_ERROR', `${what} answered ${status.toString()}`);
    };
    const trustList = async () => bounded('the TrustList', async () => (await push.getApplicationGroup()).getTrustList());
    // CloseAndUpdate(in FileHandle, out ApplyChangesRequired), called here: node-opcua 2.157's client sends it a second input argument.
    const closeAndUpdate = async (trustListId: import('node-opcua-client').NodeId, fileHandle: number): Promise<boolean> => {
      const found = await session.translateBrowsePath(opcua.makeBrowsePath(trustListId, '/CloseAndUpdate'));
      const methodId = found.targets?.[0]?.targetId;
      if (!found.statusCode.isGood() || !methodId) {
        throw new PeerError('OPCUA_SERVER_ERROR', `the TrustList has no CloseAndUpdate (${found.statusCode.toString()})`);
      }
      const r = await session.call({ objectId: trustListId, methodId, inputArguments: [{ dataType: opcua.DataType.UInt32, value: fileHandle }] });
      good('TrustList.CloseAndUpdate', r.statusCode);
      return r.outputArguments?.[0]?.value !== false;
    };
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
        if (!r.certificateSigningRequest || r.certificateSigningRequest.length === 0) {
          throw new PeerError('OPCUA_SERVER_ERROR', 'CreateSigningRequest returned no CSR');
        }
        return Buffer.from(r.certificateSigningRequest);
      },
      updateCertificate: async (certificate, issuers) => {
        const r = await bounded('UpdateCertificate', () => push.updateCertificate(DEFAULT_GROUP, RSA_SHA256_TYPE, certificate, issuers));
        good('UpdateCertificate', r.statusCode);
        return { applyChangesRequired: r.applyChangesRequired !== false };
      },
      installTrust: async (ca) => {
        let list = await trustList();
        const read = () => bounded('TrustList read', () => list.readTrustedCertificateListWithMasks(TRUST_LIST_ALL)) as Promise<TrustLists>;
        const before = await read();
        const missing = lacking(before, ca);
        if (!missing.certificates && !missing.crls)
          return { method: 'already', crlDelivered: true, applyChangesRequired: false, detail: 'the TrustList already holds the gateway CA and its CRLs' };
        let writeError: string | undefined;
        let applyChangesRequired = false;
        try {
          const { TrustListDataType } = await import('node-opcua-types');
          const { BinaryStream } = await import('node-opcua-binary-stream');
          // Our CAs' older CRLs give way to the current ones; everything else in the TrustList stays.
          const ours = new Set(ca.trusted.concat(ca.issuers).map((c) => parseCertificate(c).subjectName.toString('hex')));
          const foreign = (crls: TrustLists['trustedCrls']) => (crls ?? []).map((c) => Buffer.from(c)).filter((c) => !ours.has(safeIssuer(c)));
          const union = (have: TrustLists['trustedCertificates'], add: Buffer[]) => {
            const seen = prints(have);
            return [...(have ?? []).map((c) => Buffer.from(c)), ...add.filter((c) => !seen.has(thumbprintOf(c)))];
          };
          const next = new TrustListDataType({
            specifiedLists: TRUST_LIST_ALL,
            trustedCertificates: union(before.trustedCertificates, ca.trusted),
            trustedCrls: [...foreign(before.trustedCrls), ...ca.trustedCrls],
            issuerCertificates: union(before.issuerCertificates, ca.issuers),
            issuerCrls: [...foreign(before.issuerCrls), ...ca.issuerCrls],
          });
          const stream = new BinaryStream(next.binaryStoreSize());
          next.encode(stream);
          await bounded('TrustList write', async () => {
            await list.open(WRITE_ERASE_EXISTING);
            await list.write(stream.buffer);
            applyChangesRequired = await closeAndUpdate(list.nodeId, list.fileHandle);
            list.fileHandle = 0; // closed by CloseAndUpdate
          });
        } catch (err) {
          writeError = describe(err);
          // The server may still hold the file open for us (AddCertificate is refused while it is): close it, then start afresh.
          await bounded('TrustList close', () => list.close()).catch(() => undefined);
          list = await trustList();
        }
        let after = await read();
        const written = lacking(after, ca);
        if (!written.certificates && !written.crls)
          return { method: 'write', crlDelivered: true, applyChangesRequired, detail: 'TrustList written and read back: it holds the gateway CA and its CRLs' };
        const why = writeError ? `its TrustList takes no writes (${writeError})` : 'it took the TrustList write but does not hold it when read back';
        // AddCertificate, as before OPC UA 1.05 allowed for CA certificates: no CRLs can go this way.
        const refused: string[] = [];
        for (const [certificates, trusted] of [
          [ca.trusted, true],
          [ca.issuers, false],
        ] as const) {
          for (const c of certificates) {
            const held = trusted ? after.trustedCertificates : [...(after.trustedCertificates ?? []), ...(after.issuerCertificates ?? [])];
            if (prints(held).has(thumbprintOf(c))) continue;
            const status = await bounded('TrustList.AddCertificate', () => list.addCertificate(c, trusted));
            if (!status.isGood()) refused.push(`${trusted ? 'trusted' : 'issuer'} ${thumbprintOf(c)}: ${status.toString()}`);
          }
        }
        after = await read();
        if (!holds(after.trustedCertificates, ca.trusted))
          throw new PeerError(
            'OPCUA_SERVER_ERROR',
            `the server does not hold the gateway's issuing CA in its TrustList: ${why}; AddCertificate: ${refused.join('; ') || 'answered Good'}`,
          );
        const crlDelivered = !lacking(after, ca).crls;
        return {
          method: 'add',
          crlDelivered,
          applyChangesRequired: true,
          detail:
            `issuing CA trusted by AddCertificate (${why})${refused.length ? `; not added: ${refused.join('; ')}` : ''}; ` +
            `CRLs ${crlDelivered ? 'held' : 'not delivered: install them by hand'}`,
        };
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
        if ('refusal' in choice) throw new PeerError('OPCUA_SERVER_ERROR', choice.refusal);
        // Until the server restarts its endpoints it may still present the certificate it had.
        if (choice.endpoint.thumbprint !== thumbprintOf(certificate))
          throw new PeerError('OPCUA_SERVER_ERROR', `the server presents certificate ${choice.endpoint.thumbprint}, not ${thumbprintOf(certificate)}`);
        await this.withAdminSession(url, choice.endpoint, user, timeoutMs, async () => undefined);
        return;
      } catch (err) {
        last = err;
        this.log.debug({ url, attempt, err: describe(err) }, 'server not back yet after ApplyChanges');
        // A refused local connection costs little: look often, the server comes back about 2 s after ApplyChanges.
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    throw new PeerError('OPCUA_SERVER_ERROR', `within ${waitMs} ms the server did not present its new certificate on a session: ${describe(last)}`);
  }
}

/** The issuer of a CRL found in a server's TrustList, as hex; empty when it cannot be read. */
function safeIssuer(crl: Buffer): string {
  try {
    return crlIssuerName(crl).toString('hex');
  } catch {
    return '';
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0]!.trim() : String(err);
}
