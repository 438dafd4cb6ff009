import { mkdtempSync, rmSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { OPCUACertificateManager } from 'node-opcua-certificate-manager';
import { MessageSecurityMode, type RegisterServer2Request, SecurityPolicy, StatusCodes, type Message, type ServerSecureChannelLayer } from 'node-opcua-client';
import { OPCUABaseServer, OPCUAServerEndPoint } from 'node-opcua-server';
import { OPCUADiscoveryServer } from 'node-opcua-server-discovery';
import { certificateManagerIn, selfSignApplicationCertificate, thumbprint } from '../../scripts/lib/opcuaServerPki.js';
import { requireLoopback } from './opcuaServerRaw.js';

/**
 * node-opcua's Local Discovery Server without multicast DNS, bound to one
 * loopback address.
 *
 * OPCUADiscoveryServer.start() always announces itself over mDNS (UDP
 * multicast to 224.0.0.251 on every interface) and listens on all
 * interfaces, on port 4840 when given 0; RegisterServer2 requests that
 * carry an MdnsDiscoveryConfiguration (node-opcua servers always send one)
 * are re-announced over mDNS too. Tests must not send traffic off
 * loopback, so start() builds the endpoint itself (the library's private
 * _delayInit, with host and port 0), RegisterServer2 drops the mDNS
 * configuration before the library handles it (the registration itself,
 * which FindServers answers from, is unchanged), and RegisterServer (v1),
 * which the library would announce with a default mDNS configuration, is
 * refused. FindServersOnNetwork still answers, from the mDNS browser it
 * never gets: always an empty list.
 */
export class LoopbackDiscoveryServer extends OPCUADiscoveryServer {
  constructor(
    options: ConstructorParameters<typeof OPCUADiscoveryServer>[0],
    private readonly host: string,
  ) {
    super(options);
  }

  override async start(): Promise<void> {
    this._preInitTask.push(async () => {
      const endPoint = new OPCUAServerEndPoint({
        port: 0,
        host: this.host,
        certificateChain: this.getCertificateChain(),
        certificateManager: this.serverCertificateManager,
        privateKey: this.getPrivateKey(),
        serverInfo: this.serverInfo,
      });
      endPoint.addStandardEndpointDescriptions({
        allowAnonymous: true,
        securityModes: [MessageSecurityMode.None, MessageSecurityMode.SignAndEncrypt],
        securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
        // Like the library's own LDS endpoint: discovery services only, no sessions.
        userTokenTypes: [],
        hostname: this.host,
        disableDiscovery: true,
      });
      this.endpoints.push(endPoint);
      endPoint.on('message', (message: Message, channel: ServerSecureChannelLayer) => this.on_request(message, channel));
    });
    await new Promise<void>((resolve, reject) => OPCUABaseServer.prototype.start.call(this, (err) => (err ? reject(err) : resolve())));
  }

  /** The library's shutdown ends with a fixed one-second sleep meant for mDNS peers; there are none. */
  override async shutdown(): Promise<void> {
    await new Promise<void>((resolve, reject) => OPCUABaseServer.prototype.shutdown.call(this, (err) => (err ? reject(err) : resolve())));
  }

  protected override _on_RegisterServer2Request(message: Message, channel: ServerSecureChannelLayer): void {
    (message.request as RegisterServer2Request).discoveryConfiguration = [];
    super._on_RegisterServer2Request(message, channel);
  }

  protected override _on_RegisterServerRequest(message: Message, channel: ServerSecureChannelLayer): void {
    const fault = OPCUABaseServer.makeServiceFault(StatusCodes.BadServiceUnsupported, ['this LDS takes RegisterServer2 only']);
    channel.send_response('MSG', fault, message);
  }
}

/** The port of an LDS-ME, as OPC 10000-12 has it. */
const MULTICAST_LDS_PORT = 4840;

export interface LdsOptions {
  /** Loopback address to listen on and advertise (default 127.0.0.1). */
  host?: string;
  applicationUri?: string;
  /**
   * node-opcua's LDS as shipped (LDS-ME): it announces itself and every
   * server that registers over mDNS, on port 4840 of every interface. Only
   * in a network namespace whose one interface is loopback (refused
   * elsewhere), so the multicast stays inside it.
   */
  multicast?: boolean;
}

/** Refuses to go on unless loopback is the only network interface (an isolated network namespace). */
export function requireIsolatedNetwork(): void {
  const interfaces = Object.keys(networkInterfaces());
  if (interfaces.length !== 1 || interfaces[0] !== 'lo') {
    throw new Error(`multicast fixtures run only in a network namespace with loopback alone; this one has ${interfaces.join(', ')}`);
  }
}

/** A running LDS: what a fixture server needs to register with it (startOpcuaServer's registerWith). */
export interface LdsHandle {
  endpointUrl: string;
  applicationUri: string;
  /** The LDS's self-signed certificate (DER); registering servers trust it. */
  certificate: Buffer;
  certificateThumbprint: string;
  /** How many servers are registered right now. */
  readonly registeredServerCount: number;
  stop(): Promise<void>;
}

/**
 * Starts a Local Discovery Server on a free port. It accepts any
 * registering server's certificate (automaticallyAcceptUnknownCertificate):
 * the LDS is the plant's, the servers under test are the ones that matter.
 */
export async function startLds(options: LdsOptions = {}): Promise<LdsHandle> {
  const host = requireLoopback(options.host ?? '127.0.0.1');
  if (options.multicast) requireIsolatedNetwork();
  const applicationUri = options.applicationUri ?? `urn:fixture:lds:${host}`;
  const dir = mkdtempSync(join(tmpdir(), 'opcua-lds-'));
  let manager: OPCUACertificateManager | undefined;
  try {
    manager = await certificateManagerIn(join(dir, 'pki'), { acceptUnknown: true, keySlot: 'lds' });
    const certificate = await selfSignApplicationCertificate(manager, { applicationUri, commonName: 'Fixture LDS', host });
    const serverInfo = { applicationUri, productUri: 'urn:fixture:lds', applicationName: { text: 'Fixture LDS', locale: 'en' } };
    const lds = options.multicast
      ? new OPCUADiscoveryServer({ port: MULTICAST_LDS_PORT, serverCertificateManager: manager, serverInfo })
      : new LoopbackDiscoveryServer({ serverCertificateManager: manager, serverInfo }, host);
    await lds.start();
    const endpointUrl = options.multicast ? `opc.tcp://${host}:${MULTICAST_LDS_PORT}` : lds.getEndpointUrl();
    const cm = manager;
    let stopped: Promise<void> | undefined;
    return {
      endpointUrl,
      applicationUri,
      certificate,
      certificateThumbprint: thumbprint(certificate),
      get registeredServerCount() {
        return lds.registeredServerCount;
      },
      stop() {
        stopped ??= (async () => {
          try {
            await lds.shutdown();
          } finally {
            await cm.dispose();
            rmSync(dir, { recursive: true, force: true });
          }
        })();
        return stopped;
      },
    };
  } catch (err) {
    await manager?.dispose();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
