import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import type { Logger } from '../log.js';
import { Deadline, ProbeTimeout } from './deadline.js';
import { opcuaHello } from './opcuaHello.js';
import { loadOpcua } from './opcuaLoader.js';
import { PeerError } from '../errors.js';

type Opcua = Awaited<ReturnType<typeof loadOpcua>>;
type Client = InstanceType<Opcua['OPCUAClient']>;
type Session = import('node-opcua-client').ClientSession;

export interface OpcuaEndpointFacts {
  url: string;
  securityMode: 'None' | 'Sign' | 'SignAndEncrypt' | 'Invalid';
  /** Short policy name: None, Basic256Sha256, Aes128_Sha256_RsaOaep, … */
  securityPolicy: string;
  userTokens: string[];
}

export interface DiDevice {
  browseName: string;
  manufacturer?: string;
  model?: string;
  serialNumber?: string;
  hardwareRevision?: string;
  softwareRevision?: string;
  deviceRevision?: string;
  productInstanceUri?: string;
  assetId?: string;
}

export interface OpcuaServerFacts {
  endpointUrl: string;
  applicationUri: string;
  applicationName?: string;
  productUri?: string;
  /** SHA-1 of the server certificate's DER, in hex: the OPC UA thumbprint. */
  certificateThumbprint?: string;
  endpoints: OpcuaEndpointFacts[];
  buildInfo?: { productUri?: string; manufacturerName?: string; productName?: string; softwareVersion?: string; buildNumber?: string };
  devices?: DiDevice[];
  /**
   * Whether the address space has Part 12's ServerConfiguration with
   * CreateSigningRequest. Its presence does not prove push works (node-opcua
   * servers list the nodes without the implementation); its absence proves
   * it does not. Absent when no session could be opened.
   */
  serverConfiguration?: boolean;
  /** Why the nameplate could not be read (endpoints were). */
  nameplateError?: string;
}

export interface ServerListing {
  applicationUri: string;
  applicationName?: string;
  /** Server, Client, ClientAndServer or DiscoveryServer. */
  applicationType?: string;
  discoveryUrls: string[];
}

export interface OpcuaProbeDeps {
  log: Logger;
  /** node-opcua's PKI for the agent as a client: always here, never under the user's home. */
  pkiDir: string;
  applicationUri: string;
  /** The agent-client certificate (PEM, with its issuing CA) and key the client presents. */
  certificateFile?: string;
  privateKeyFile?: string;
  /** The gateway CA (DER): trusted in the client's PKI, so that its own certificate and the servers' it pushed check out. */
  caCertificates?: Buffer[];
  /** The gateway CA's CRLs (DER), which node-opcua wants for every CA it checks. */
  crls?: Buffer[];
}

const DI_NAMESPACE = 'http://opcfoundation.org/UA/DI/';
/** DeviceSet in the DI namespace (OPC 10000-100). */
const DEVICE_SET_ID = 5001;
const DI_PROPERTIES: Record<string, keyof DiDevice> = {
  Manufacturer: 'manufacturer',
  Model: 'model',
  SerialNumber: 'serialNumber',
  HardwareRevision: 'hardwareRevision',
  SoftwareRevision: 'softwareRevision',
  DeviceRevision: 'deviceRevision',
  ProductInstanceUri: 'productInstanceUri',
  AssetId: 'assetId',
};
const MAX_DEVICES = 100;
const clean = (v: unknown): string | undefined => {
  const text = typeof v === 'string' ? v : v && typeof v === 'object' && 'text' in v ? (v as { text?: unknown }).text : undefined;
  if (typeof text !== 'string') return undefined;
  const t = text
    .replace(/[\u0000-\u001f\u007f]/g, ' ')
    .trim()
    .slice(0, 256);
  return t === '' ? undefined : t;
};

/** `promise`, or a ProbeTimeout after `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new ProbeTimeout(`${what}: no answer within ${ms} ms`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The first DER element of a buffer: a server may send its certificate followed by its chain. */
export function firstDer(der: Buffer): Buffer {
  if (der.length < 2 || der[0] !== 0x30) return der;
  const first = der[1]!;
  if (first < 0x80) return der.subarray(0, 2 + first);
  const n = first & 0x7f;
  if (n === 0 || n > 4 || der.length < 2 + n) return der;
  let length = 0;
  for (let i = 0; i < n; i++) length = length * 256 + der[2 + i]!;
  return der.subarray(0, Math.min(der.length, 2 + n + length));
}

/** Destroys the TCP socket under a node-opcua client (library internals: a workaround for connect() ignoring disconnect()). */
export function destroySocket(client: Client): void {
  const channel = (client as unknown as { _secureChannel?: { getTransport?: () => { _socket?: { destroy?: () => void } | null } | undefined } | null })
    ._secureChannel;
  channel?.getTransport?.()?._socket?.destroy?.();
}

/** Gives up a connect that timed out: its socket is destroyed now, and the client disconnected if the connect completes later. */
export function abandonConnect(client: Client, connecting: Promise<unknown>): void {
  destroySocket(client);
  connecting.then(
    () => void client.disconnect().catch(() => undefined),
    () => undefined,
  );
}

/** Closes a session (when one was made), then the client, each given at most 500 ms, and destroys the socket. */
export async function closeClient(client: Client, session: { close(): Promise<unknown> } | undefined): Promise<void> {
  await Promise.race([session?.close().catch(() => undefined), new Promise((r) => setTimeout(r, 500))]);
  await Promise.race([client.disconnect().catch(() => undefined), new Promise((r) => setTimeout(r, 500))]);
  destroySocket(client);
}

export { Deadline, ProbeTimeout } from './deadline.js';

/**
 * What a discovery run asks of one OPC UA server: GetEndpoints (the
 * security it offers, its certificate, its applicationUri), then its
 * nameplate (ServerStatus/BuildInfo and the OPC UA DI DeviceSet) over an
 * anonymous session where the server allows one without security. One
 * budget (a Deadline) bounds the whole contact, hello to nameplate: a hung
 * or malformed server costs only that, and a nameplate that runs out of it
 * loses only the nameplate.
 */
export class OpcuaProbe {
  private certificateManager: InstanceType<typeof import('node-opcua-certificate-manager').OPCUACertificateManager> | undefined;

  constructor(private readonly deps: OpcuaProbeDeps) {}

  async init(): Promise<void> {
    await loadOpcua(this.deps.log);
    const { OPCUACertificateManager } = await import('node-opcua-certificate-manager');
    mkdirSync(this.deps.pkiDir, { recursive: true, mode: 0o700 });
    // Discovery reads public facts only; it sends nothing secret over these channels.
    this.certificateManager = new OPCUACertificateManager({ rootFolder: this.deps.pkiDir, automaticallyAcceptUnknownCertificate: true });
    await this.certificateManager.initialize();
    for (const ca of this.deps.caCertificates ?? []) await this.certificateManager.addIssuer(ca, false, true);
    for (const crl of this.deps.crls ?? []) await this.certificateManager.addRevocationList(crl);
  }

  async dispose(): Promise<void> {
    await this.certificateManager?.dispose();
    this.certificateManager = undefined;
  }

  /**
   * A client with the agent's identity and the shared certificate manager:
   * SecurityMode None unless `secure` names a policy and the server
   * certificate to encrypt to (pinned: node-opcua then talks to no other).
   */
  async client(timeoutMs: number, secure?: { securityPolicyUri: string; serverCertificate: Buffer }): Promise<{ opcua: Opcua; client: Client }> {
    const opcua = await loadOpcua(this.deps.log);
    // node-opcua disposes the client's certificate manager when a client disconnects unless it is
    // counted as shared: one count per client keeps it alive for the probes running beside it.
    this.certificateManager!.referenceCounter++;
    const client = opcua.OPCUAClient.create({
      applicationName: 'edge-agent',
      applicationUri: this.deps.applicationUri,
      clientCertificateManager: this.certificateManager!,
      ...(this.deps.certificateFile && this.deps.privateKeyFile
        ? { certificateFile: this.deps.certificateFile, privateKeyFile: this.deps.privateKeyFile }
        : {}),
      endpointMustExist: false,
      securityMode: secure ? opcua.MessageSecurityMode.SignAndEncrypt : opcua.MessageSecurityMode.None,
      securityPolicy: secure ? (secure.securityPolicyUri as import('node-opcua-client').SecurityPolicy) : opcua.SecurityPolicy.None,
      ...(secure ? { serverCertificate: secure.serverCertificate } : {}),
      connectionStrategy: { maxRetry: 0, initialDelay: 50, maxDelay: 100 },
      // node-opcua's own timeouts; the caller's deadline is what bounds the contact.
      transportTimeout: Math.max(100, timeoutMs),
      defaultTransactionTimeout: Math.max(100, timeoutMs),
      keepSessionAlive: false,
    });
    return { opcua, client };
  }

  /**
   * Runs `work` on a connected client and always closes the connection.
   * `budget` bounds everything: the hello, connecting, and `work`, which
   * bounds its own calls with the Deadline it is given (`deadline.within`).
   * Rejects with ProbeTimeout when connecting runs out of it. node-opcua's
   * disconnect() does not end a connect() that is still waiting for the
   * server's ACK, so after a timeout the socket is destroyed directly, and
   * closed again when the abandoned connect() settles. Closing waits for the
   * server only while the budget lasts.
   */
  async withClient<T>(url: string, budget: number | Deadline, work: (opcua: Opcua, client: Client, deadline: Deadline) => Promise<T>): Promise<T> {
    const deadline = Deadline.of(budget);
    await opcuaHello(url, deadline);
    const { opcua, client } = await this.client(deadline.remaining());
    const connecting = client.connect(url);
    let connected = false;
    try {
      await deadline.within(connecting, `no complete answer from ${url}`);
      connected = true;
      return await work(opcua, client, deadline);
    } finally {
      if (!connected) abandonConnect(client, connecting);
      await Promise.race([client.disconnect().catch(() => undefined), new Promise((r) => setTimeout(r, Math.min(500, deadline.remaining())))]);
      destroySocket(client);
    }
  }

  async probe(url: string, budget: number | Deadline): Promise<OpcuaServerFacts> {
    return this.withClient(url, budget, async (opcua, client, deadline) => {
      const endpoints = await deadline.within(client.getEndpoints(), `GetEndpoints from ${url}`);
      if (endpoints.length === 0) throw new PeerError('OPCUA_SERVER_ERROR', 'the server lists no endpoints');
      const first = endpoints[0]!;
      const certificate = endpoints.find((e) => e.serverCertificate && e.serverCertificate.length > 0)?.serverCertificate;
      const facts: OpcuaServerFacts = {
        endpointUrl: url,
        applicationUri: clean(first.server.applicationUri) ?? '',
        endpoints: endpoints.map((e) => ({
          url: e.endpointUrl ?? '',
          securityMode: (opcua.MessageSecurityMode[e.securityMode] ?? 'Invalid') as OpcuaEndpointFacts['securityMode'],
          securityPolicy: (e.securityPolicyUri ?? '').split('#').pop() ?? '',
          userTokens: (e.userIdentityTokens ?? []).map((t) => opcua.UserTokenType[t.tokenType] ?? String(t.tokenType)),
        })),
      };
      if (facts.applicationUri === '') throw new PeerError('OPCUA_SERVER_ERROR', 'the server gives no applicationUri');
      const name = clean(first.server.applicationName);
      if (name) facts.applicationName = name;
      const productUri = clean(first.server.productUri);
      if (productUri) facts.productUri = productUri;
      if (certificate) facts.certificateThumbprint = createHash('sha1').update(firstDer(certificate)).digest('hex');
      const anonymousNone = facts.endpoints.some((e) => e.securityMode === 'None' && e.userTokens.includes('Anonymous'));
      if (!anonymousNone) {
        facts.nameplateError = 'the server offers no anonymous session without security; the nameplate is read once it trusts the gateway CA';
        return facts;
      }
      let session: Session | undefined;
      try {
        // What GetEndpoints left of the budget: a nameplate that runs out of it loses only itself.
        await deadline.within(
          (async () => {
            session = await client.createSession();
            facts.buildInfo = await readBuildInfo(opcua, session);
            const devices = await readDeviceSet(opcua, session);
            if (devices.length > 0) facts.devices = devices;
            facts.serverConfiguration = await hasServerConfiguration(opcua, session);
          })(),
          'the nameplate',
        );
      } catch (err) {
        facts.nameplateError = `nameplate not readable: ${(err as Error).message}`;
      } finally {
        await Promise.race([
          (session as Session | undefined)?.close().catch(() => undefined),
          new Promise((r) => setTimeout(r, Math.min(500, deadline.remaining()))),
        ]);
      }
      return facts;
    });
  }

  /** FindServers (and FindServersOnNetwork where the LDS offers it) on a discovery server. */
  async findServers(url: string, budget: number | Deadline): Promise<ServerListing[]> {
    return this.withClient(url, budget, async (opcua, client, deadline) => {
      const servers = await deadline.within(client.findServers(), `FindServers on ${url}`);
      const out: ServerListing[] = servers.map((s) => ({
        applicationUri: clean(s.applicationUri) ?? '',
        applicationType: opcua.ApplicationType[s.applicationType] ?? String(s.applicationType),
        ...(clean(s.applicationName) ? { applicationName: clean(s.applicationName)! } : {}),
        discoveryUrls: (s.discoveryUrls ?? []).filter((u): u is string => typeof u === 'string'),
      }));
      try {
        for (const s of await deadline.within(client.findServersOnNetwork(), `FindServersOnNetwork on ${url}`)) {
          if (s.discoveryUrl) out.push({ applicationUri: '', ...(s.serverName ? { applicationName: s.serverName } : {}), discoveryUrls: [s.discoveryUrl] });
        }
      } catch {
        // An LDS without multicast extension answers BadServiceUnsupported: FindServers is all it has.
      }
      return out;
    });
  }
}

async function readBuildInfo(opcua: Opcua, session: Session): Promise<OpcuaServerFacts['buildInfo']> {
  const ids = opcua.VariableIds;
  const fields = [
    ['productUri', ids.Server_ServerStatus_BuildInfo_ProductUri],
    ['manufacturerName', ids.Server_ServerStatus_BuildInfo_ManufacturerName],
    ['productName', ids.Server_ServerStatus_BuildInfo_ProductName],
    ['softwareVersion', ids.Server_ServerStatus_BuildInfo_SoftwareVersion],
    ['buildNumber', ids.Server_ServerStatus_BuildInfo_BuildNumber],
  ] as const;
  const values = await session.read(fields.map(([, id]) => ({ nodeId: opcua.resolveNodeId(id), attributeId: opcua.AttributeIds.Value })));
  const info: NonNullable<OpcuaServerFacts['buildInfo']> = {};
  fields.forEach(([key], i) => {
    const v = clean(values[i]?.value?.value);
    if (v !== undefined) info[key] = v;
  });
  return info;
}

/** ServerConfiguration (i=12637) with its CreateSigningRequest method (i=12737) in the address space. */
async function hasServerConfiguration(opcua: Opcua, session: Session): Promise<boolean> {
  const [object, method] = await session.read([
    { nodeId: 'i=12637', attributeId: opcua.AttributeIds.BrowseName },
    { nodeId: 'i=12737', attributeId: opcua.AttributeIds.BrowseName },
  ]);
  return object?.statusCode.isGood() === true && method?.statusCode.isGood() === true;
}

async function readDeviceSet(opcua: Opcua, session: Session): Promise<DiDevice[]> {
  const namespaces = (await session.read({ nodeId: opcua.resolveNodeId(opcua.VariableIds.Server_NamespaceArray), attributeId: opcua.AttributeIds.Value })).value
    ?.value as string[] | undefined;
  const di = namespaces?.indexOf(DI_NAMESPACE) ?? -1;
  if (di < 0) return [];
  const set = await session.browse({
    nodeId: `ns=${di};i=${DEVICE_SET_ID}`,
    browseDirection: opcua.BrowseDirection.Forward,
    referenceTypeId: 'HierarchicalReferences',
    includeSubtypes: true,
    nodeClassMask: opcua.NodeClass.Object,
    resultMask: 63,
  });
  const devices: DiDevice[] = [];
  for (const ref of (set.references ?? []).slice(0, MAX_DEVICES)) {
    const device: DiDevice = { browseName: clean(ref.browseName.name) ?? '' };
    const children = await session.browse({
      nodeId: ref.nodeId,
      browseDirection: opcua.BrowseDirection.Forward,
      referenceTypeId: 'HierarchicalReferences',
      includeSubtypes: true,
      nodeClassMask: opcua.NodeClass.Variable,
      resultMask: 63,
    });
    const wanted = (children.references ?? []).filter((c) => c.browseName.name && c.browseName.name in DI_PROPERTIES);
    const values = wanted.length === 0 ? [] : await session.read(wanted.map((c) => ({ nodeId: c.nodeId, attributeId: opcua.AttributeIds.Value })));
    wanted.forEach((c, i) => {
      const v = clean(values[i]?.value?.value);
      if (v !== undefined) device[DI_PROPERTIES[c.browseName.name!]!] = v as never;
    });
    // DeviceSet also holds DI's own DeviceFeatures folder: what carries no nameplate property is no device.
    if (Object.keys(device).length > 1) devices.push(device);
  }
  return devices;
}
