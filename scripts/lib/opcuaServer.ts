import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { OPCUACertificateManager } from 'node-opcua-certificate-manager';
import { MessageSecurityMode, ObjectIds, resolveNodeId, SecurityPolicy, type NodeId } from 'node-opcua-client';
import { nodesets } from 'node-opcua-nodesets';
import { OPCUAServer, RegisterServerMethod, type OPCUAServerOptions } from 'node-opcua-server';
import { installPushCertificateManagementOnServer } from 'node-opcua-server-configuration';
import { installDeviceSet, type FixtureDevice } from './opcuaServerDevices.js';
import { certificateManagerIn, selfSignApplicationCertificate, thumbprint } from './opcuaServerPki.js';
import { requireLoopback } from './local.js';
import { completeTrustListWrites } from './opcuaServerTrustList.js';
import { installConfigNodes, type FixtureConfig, type FixtureConfigNode } from './opcuaServerConfig.js';

export { DI_IDS, DI_NAMESPACE_URI, SAMPLE_PUMP, type FixtureDevice } from './opcuaServerDevices.js';
export { CONFIG_NODES, type FixtureConfig, type FixtureConfigNode } from './opcuaServerConfig.js';
export { certificateManagerIn, clientPkiIn, sharedRsaKey, thumbprint, type FixtureClientPki } from './opcuaServerPki.js';

export interface FixtureBuildInfo {
  productUri: string;
  manufacturerName: string;
  productName: string;
  softwareVersion: string;
  buildNumber: string;
}

export interface FixtureUser {
  username: string;
  password: string;
}

export interface OpcuaServerOptions {
  /** Loopback address to listen on, and the only host named in its endpoint URLs (default 127.0.0.1). */
  host?: string;
  /** Port to listen on (default 0: one the kernel picks). */
  port?: number;
  /**
   * none-only: one endpoint, SecurityMode None.
   * secure: SignAndEncrypt with Basic256Sha256 and Aes128_Sha256_RsaOaep; GetEndpoints lists
   * nothing else. node-opcua keeps a restricted None endpoint that serves discovery only
   * (GetEndpoints, FindServers over an unsecured channel, as OPC 10000-4 5.4 expects) and refuses sessions.
   */
  securityModes?: 'none-only' | 'secure';
  applicationUri?: string;
  /** ApplicationName and the CN of the self-signed certificate (default "Fixture Server"). */
  applicationName?: string;
  buildInfo?: Partial<FixtureBuildInfo>;
  /** Devices to instantiate under DI's DeviceSet (loads the DI nodeset). */
  deviceSet?: FixtureDevice[];
  /** How devices hang off DeviceSet; both are hierarchical references (default HasComponent). */
  deviceSetReference?: 'HasComponent' | 'Organizes';
  /**
   * Part 12 push certificate management (needs securityModes 'secure'). Only
   * `securityAdmin` holds the SecurityAdmin role; `users` authenticate but
   * hold only AuthenticatedUser. Anonymous sessions may browse and read.
   */
  pushManagement?: {
    securityAdmin: FixtureUser;
    users?: FixtureUser[];
    /** false: the users and roles, but Part 12's methods left unimplemented, as on a server without push management (default true). */
    installed?: boolean;
    /**
     * true: a TrustList that applies what is written to it (CloseAndUpdate), as a complete Part 12
     * server's does; node-opcua 2.157's does not (default false).
     */
    trustListWrites?: boolean;
  };
  /** Register with this LDS (RegisterServer2) before startOpcuaServer resolves. */
  registerWith?: { endpointUrl: string; certificate: Buffer };
  /**
   * Whether the server trusts client certificates it has never seen, as a
   * commissioning plant server often does (default true). With false, a
   * client certificate must be trusted first (trustClientCertificate).
   */
  acceptUnknownClientCertificates?: boolean;
  /** Where the server's temp dir (its PKI) is made (default: the system's temp dir). */
  parentDir?: string;
  /**
   * Configuration variables for profiles to write (true: CONFIG_NODES, a
   * writable variable each of Double, Float, Int32, UInt16, Boolean, String
   * and a read-only String), in a Configuration folder under Objects.
   */
  configNodes?: boolean | readonly FixtureConfigNode[];
}

export interface OpcuaServerHandle {
  host: string;
  port: number;
  endpointUrl: string;
  applicationUri: string;
  /** The self-signed certificate the server started with (DER). Push management may replace it. */
  certificate: Buffer;
  /** SHA-1 of `certificate`'s DER, lower-case hex: the OPC UA thumbprint. */
  certificateThumbprint: string;
  /** The server's PKI (own/, trusted/, issuers/, rejected/), inside the fixture's temp dir. */
  pkiDir: string;
  /** Bytes the server has read from clients so far: zero proves nobody contacted it. */
  readonly bytesRead: number;
  /** Adds a client application certificate (DER) to the server's trusted list. */
  trustClientCertificate(der: Buffer): Promise<void>;
  /**
   * What an operator does once to let a CA-issued client in: the client's
   * certificate (DER) trusted, the CAs above it (DER) known as issuers, and
   * a CRL (DER or PEM) for every one of those CAs, which node-opcua insists on.
   */
  trustCaIssuedClient(client: { certificate: Buffer; issuers: Buffer[]; crls: Buffer[] }): Promise<void>;
  /** The configuration variables (with the configNodes option). */
  config?: FixtureConfig;
  /** Closes the listening endpoints (the server looks gone: connections refused), keeping its address space and PKI. */
  suspend(): Promise<void>;
  /** Opens the endpoints again after suspend(), on the same port. */
  resume(): Promise<void>;
  /** Shuts down (unregistering from the LDS) and removes the fixture's temp dir. */
  stop(): Promise<void>;
}

const DEFAULT_BUILD_INFO: FixtureBuildInfo = {
  productUri: 'urn:fixture:product',
  manufacturerName: 'Fixture Automation',
  productName: 'Fixture PLC',
  softwareVersion: '1.0.0',
  buildNumber: '1',
};

/** A bound for a registration that never comes, not a speed check: a loaded machine registers slowly. */
const REGISTRATION_TIMEOUT_MS = 60_000;

let instances = 0;

function userManager(push: NonNullable<OpcuaServerOptions['pushManagement']>): OPCUAServerOptions['userManager'] {
  const authenticated: NodeId = resolveNodeId(ObjectIds.WellKnownRole_AuthenticatedUser);
  const securityAdmin: NodeId = resolveNodeId(ObjectIds.WellKnownRole_SecurityAdmin);
  const users = [push.securityAdmin, ...(push.users ?? [])];
  return {
    isValidUser: (username: string, password: string) => users.some((u) => u.username === username && u.password === password),
    getUserRoles: (username: string) => (username === push.securityAdmin.username ? [securityAdmin, authenticated] : [authenticated]),
  };
}

function endpointSecurity(mode: 'none-only' | 'secure'): Pick<OPCUAServerOptions, 'securityModes' | 'securityPolicies'> {
  return mode === 'none-only'
    ? { securityModes: [MessageSecurityMode.None], securityPolicies: [SecurityPolicy.None] }
    : {
        securityModes: [MessageSecurityMode.SignAndEncrypt],
        securityPolicies: [SecurityPolicy.Basic256Sha256, SecurityPolicy.Aes128_Sha256_RsaOaep],
      };
}

async function withinRegistrationTimeout(registration: Promise<void>, lds: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      registration,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no registration with the LDS at ${lds} within ${REGISTRATION_TIMEOUT_MS} ms`)), REGISTRATION_TIMEOUT_MS);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A real node-opcua server on a loopback address and a port chosen by the
 * kernel, with a self-signed certificate and its whole PKI in a temp dir it
 * owns (nothing under the home directory).
 */
export async function startOpcuaServer(options: OpcuaServerOptions = {}): Promise<OpcuaServerHandle> {
  const host = requireLoopback(options.host ?? '127.0.0.1');
  const mode = options.securityModes ?? 'none-only';
  if (options.pushManagement && mode !== 'secure') {
    throw new Error('push management needs securityModes "secure": its methods require SignAndEncrypt');
  }
  const applicationUri = options.applicationUri ?? `urn:fixture:opcua-server:${process.pid}:${++instances}`;
  const applicationName = options.applicationName ?? 'Fixture Server';
  const buildInfo = { ...DEFAULT_BUILD_INFO, ...options.buildInfo };
  const dir = mkdtempSync(join(options.parentDir ?? tmpdir(), 'opcua-server-'));
  const pkiDir = join(dir, 'pki');
  const managers: OPCUACertificateManager[] = [];
  let server: OPCUAServer | undefined;

  const cleanup = async () => {
    try {
      if (server?.engine?.isStarted()) await server.shutdown(0);
    } finally {
      for (const manager of managers) await manager.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  };

  try {
    // A fresh application key per server (no keySlot): see sharedRsaKey.
    const serverCertificateManager = await certificateManagerIn(pkiDir, { acceptUnknown: options.acceptUnknownClientCertificates ?? true });
    managers.push(serverCertificateManager);
    // Users authenticate by name and password here; the user PKI exists because node-opcua would otherwise make one in ~/.config.
    const userCertificateManager = await certificateManagerIn(join(dir, 'user-pki'), { acceptUnknown: false, keySlot: 'unused-user-pki' });
    managers.push(userCertificateManager);
    const certificate = await selfSignApplicationCertificate(serverCertificateManager, { applicationUri, commonName: applicationName, host });
    if (options.registerWith) await serverCertificateManager.trustCertificate(options.registerWith.certificate);

    const opcua = new OPCUAServer({
      host,
      hostname: host,
      port: options.port ?? 0,
      ...endpointSecurity(mode),
      serverCertificateManager,
      userCertificateManager,
      nodeset_filename: options.deviceSet ? [nodesets.standard, nodesets.di] : [nodesets.standard],
      serverInfo: { applicationUri, productUri: buildInfo.productUri, applicationName: { text: applicationName, locale: 'en' } },
      buildInfo,
      ...(options.pushManagement ? { userManager: userManager(options.pushManagement) } : {}),
      ...(options.registerWith ? { registerServerMethod: RegisterServerMethod.LDS, discoveryServerEndpointUrl: options.registerWith.endpointUrl } : {}),
    });
    server = opcua;
    await opcua.initialize();
    if (options.deviceSet) installDeviceSet(opcua, options.deviceSet, options.deviceSetReference ?? 'HasComponent');
    const config = options.configNodes ? installConfigNodes(opcua, options.configNodes === true ? undefined : options.configNodes) : undefined;
    if (options.pushManagement && options.pushManagement.installed !== false) {
      await installPushCertificateManagementOnServer(opcua);
      if (options.pushManagement.trustListWrites) completeTrustListWrites(opcua, serverCertificateManager);
    }
    // Listening before start: registration runs in the background from start() on.
    const registration = new Promise<void>((resolve) => opcua.once('serverRegistered', () => resolve()));
    await opcua.start();
    if (options.registerWith) await withinRegistrationTimeout(registration, options.registerWith.endpointUrl);

    let stopped: Promise<void> | undefined;
    return {
      host,
      port: opcua.endpoints[0]!.port,
      // As the server advertises it (hostname = host), not as composed here.
      endpointUrl: opcua.getEndpointUrl(),
      applicationUri,
      certificate,
      certificateThumbprint: thumbprint(certificate),
      pkiDir,
      get bytesRead() {
        return opcua.bytesRead;
      },
      trustClientCertificate: (der) => serverCertificateManager.trustCertificate(der),
      async trustCaIssuedClient(client) {
        for (const issuer of client.issuers) await serverCertificateManager.addIssuer(issuer);
        for (const crl of client.crls) await serverCertificateManager.addRevocationList(crl);
        await serverCertificateManager.trustCertificate(client.certificate);
      },
      ...(config ? { config } : {}),
      suspend: () => opcua.suspendEndPoints(),
      resume: () => opcua.resumeEndPoints(),
      stop() {
        stopped ??= cleanup();
        return stopped;
      },
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
