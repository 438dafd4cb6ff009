import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import {
  AttributeIds,
  BrowseDirection,
  DataType,
  MessageSecurityMode,
  OPCUAClient,
  SecurityPolicy,
  StatusCodes,
  UserTokenType,
  VariableIds,
  coerceNodeId,
  type ClientSession,
  type NodeId,
  type UserIdentityInfo,
} from 'node-opcua-client';
import { ClientPushCertificateManagement } from 'node-opcua-server-configuration';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCsr } from '../../../certs/x509/csr.js';
import { tempDir } from '../../helpers/daemon.js';
import {
  clientPkiIn,
  DI_IDS,
  DI_NAMESPACE_URI,
  SAMPLE_PUMP as PUMP,
  startGarbageServer,
  startHangingServer,
  startLds,
  startOpcuaServer,
  thumbprint,
  type FixtureClientPki,
  type FixtureDevice,
  type LdsHandle,
  type OpcuaServerHandle,
  type RawTcpServer,
} from '../../helpers/opcuaServer.js';

const VALVE: FixtureDevice = {
  ...PUMP,
  name: 'Valve-2',
  manufacturer: 'Valvo',
  model: 'V-10',
  serialNumber: 'V-99',
  assetId: 'PLANT1-V-002',
  productInstanceUri: 'urn:valvo:v-10:v-99',
};
const BUILD = {
  productUri: 'urn:acme:plc:s9',
  manufacturerName: 'ACME Automation',
  productName: 'ACME S9 PLC',
  softwareVersion: '9.4.1',
  buildNumber: '2024.11.7',
};
const ADMIN = { username: 'secadmin', password: 'correct horse' };
const OPERATOR = { username: 'operator', password: 'operator-pw' };

describe('OPC UA server fixture (real node-opcua servers and clients on loopback)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let clientPki: FixtureClientPki;
  let lds: LdsHandle;
  let plc: OpcuaServerHandle;
  let secure: OpcuaServerHandle;
  let hanging: RawTcpServer;
  let garbage: RawTcpServer;
  const stops: (() => Promise<void>)[] = [];
  const track = async <T extends { stop(): Promise<void> }>(starting: Promise<T>): Promise<T> => {
    const handle = await starting;
    stops.push(() => handle.stop());
    return handle;
  };

  beforeAll(async () => {
    tmp = tempDir('opcua-fixture-test-');
    // The client trusts no server it is not told about: the secure server's certificate is trusted from what the fixture reports.
    clientPki = await clientPkiIn(join(tmp.dir, 'client-pki'), { applicationUri: 'urn:fixture:test-client' });
    [[lds, plc], secure, hanging, garbage] = await Promise.all([
      (async () => {
        const discovery = await track(startLds());
        const registered = await track(
          startOpcuaServer({ host: '127.0.0.2', applicationName: 'ACME S9', buildInfo: BUILD, deviceSet: [PUMP, VALVE], registerWith: discovery }),
        );
        return [discovery, registered] as const;
      })(),
      track(
        startOpcuaServer({
          securityModes: 'secure',
          acceptUnknownClientCertificates: false,
          pushManagement: { securityAdmin: ADMIN, users: [OPERATOR] },
        }),
      ),
      track(startHangingServer('127.0.0.2')),
      track(startGarbageServer('127.0.0.2')),
    ]);
    await clientPki.certificateManager.trustCertificate(secure.certificate);
    await secure.trustClientCertificate(clientPki.certificate);
  }, 180_000);

  afterAll(async () => {
    // Reverse start order: servers unregister from the LDS before it goes.
    for (const stop of stops.reverse()) await stop();
    await clientPki?.certificateManager.dispose();
    tmp?.cleanup();
  });

  function client(options: { secure?: boolean; transportTimeout?: number; pki?: FixtureClientPki } = {}): OPCUAClient {
    const pki = options.pki ?? clientPki;
    return OPCUAClient.create({
      applicationName: 'fixture-test-client',
      applicationUri: pki.applicationUri,
      clientCertificateManager: pki.certificateManager,
      endpointMustExist: false,
      connectionStrategy: { maxRetry: 0, initialDelay: 10, maxDelay: 20 },
      ...(options.secure ? { securityMode: MessageSecurityMode.SignAndEncrypt, securityPolicy: SecurityPolicy.Basic256Sha256 } : {}),
      ...(options.transportTimeout ? { transportTimeout: options.transportTimeout } : {}),
    });
  }

  async function withSession<T>(
    endpointUrl: string,
    fn: (session: ClientSession) => Promise<T>,
    identity?: UserIdentityInfo,
    secureChannel = false,
  ): Promise<T> {
    const c = client({ secure: secureChannel });
    try {
      await c.connect(endpointUrl);
      const session = await c.createSession(identity);
      try {
        return await fn(session);
      } finally {
        await session.close();
      }
    } finally {
      await c.disconnect();
    }
  }

  async function endpoints(endpointUrl: string) {
    const c = client();
    try {
      await c.connect(endpointUrl);
      return await c.getEndpoints();
    } finally {
      await c.disconnect();
    }
  }

  const reachable = (host: string, port: number) =>
    new Promise<boolean>((resolve) => {
      const socket = connect({ host, port });
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => resolve(false));
    });

  it('a server on 127.0.0.2 names only 127.0.0.2 in its endpoints and listens on that address only', async () => {
    expect(plc.endpointUrl).toBe(`opc.tcp://127.0.0.2:${plc.port}`);
    const found = await endpoints(plc.endpointUrl);
    expect(found.length).toBeGreaterThan(0);
    for (const e of found) {
      expect(new URL(e.endpointUrl!).host).toBe(`127.0.0.2:${plc.port}`);
      expect(e.server.applicationUri).toBe(plc.applicationUri);
      expect(thumbprint(e.serverCertificate)).toBe(plc.certificateThumbprint);
    }
    expect(await reachable('127.0.0.2', plc.port)).toBe(true);
    // 127.0.0.3 is loopback too: refused there means the listener is not on a wildcard address.
    expect(await reachable('127.0.0.3', plc.port)).toBe(false);
  });

  it('a none-only server offers SecurityMode None and nothing else', async () => {
    const found = await endpoints(plc.endpointUrl);
    expect(found.map((e) => [e.securityMode, e.securityPolicyUri])).toEqual(found.map(() => [MessageSecurityMode.None, SecurityPolicy.None]));
  });

  it('a secure server lists only SignAndEncrypt endpoints, with the certificate the fixture reports', async () => {
    const found = await endpoints(secure.endpointUrl);
    expect(new Set(found.map((e) => e.securityMode))).toEqual(new Set([MessageSecurityMode.SignAndEncrypt]));
    expect(new Set(found.map((e) => e.securityPolicyUri))).toEqual(new Set([SecurityPolicy.Basic256Sha256, SecurityPolicy.Aes128_Sha256_RsaOaep]));
    for (const e of found) expect(thumbprint(e.serverCertificate)).toBe(secure.certificateThumbprint);
    const san = new X509Certificate(secure.certificate).subjectAltName ?? '';
    expect(san).toContain(`URI:${secure.applicationUri}`);
    expect(san).toContain('IP Address:127.0.0.1');
  });

  it('a secure server answers discovery over None but offers no session without SignAndEncrypt', async () => {
    // GetEndpoints over None works (the endpoints() helper connects without security) ...
    expect((await endpoints(secure.endpointUrl)).length).toBeGreaterThan(0);
    // ... but no listed endpoint has SecurityMode None, so a client finds none to open a session on.
    await expect(withSession(secure.endpointUrl, async () => 'session')).rejects.toThrow(/End point must exist/);
    await expect(withSession(secure.endpointUrl, async () => 'session', undefined, true)).resolves.toBe('session');
  });

  it('each server has an application key of its own (the CA would take a shared key for a clone)', () => {
    const spki = (der: Buffer) => new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' });
    expect(spki(plc.certificate).equals(spki(secure.certificate))).toBe(false);
  });

  it('a secure server that does not accept unknown clients refuses a client it was not told to trust', async () => {
    const stranger = await clientPkiIn(join(tmp.dir, 'stranger-pki'), {
      applicationUri: 'urn:fixture:stranger',
      keySlot: 'stranger',
      trustServers: [secure.certificate],
    });
    const c = client({ secure: true, pki: stranger });
    try {
      await expect(c.connect(secure.endpointUrl)).rejects.toThrow();
    } finally {
      await c.disconnect();
      await stranger.certificateManager.dispose();
    }
  });

  it('BuildInfo reads back', async () => {
    const ids = {
      productUri: VariableIds.Server_ServerStatus_BuildInfo_ProductUri,
      manufacturerName: VariableIds.Server_ServerStatus_BuildInfo_ManufacturerName,
      productName: VariableIds.Server_ServerStatus_BuildInfo_ProductName,
      softwareVersion: VariableIds.Server_ServerStatus_BuildInfo_SoftwareVersion,
      buildNumber: VariableIds.Server_ServerStatus_BuildInfo_BuildNumber,
    };
    const values = await withSession(plc.endpointUrl, (session) =>
      session.read(Object.values(ids).map((id) => ({ nodeId: coerceNodeId(id), attributeId: AttributeIds.Value }))),
    );
    expect(Object.fromEntries(Object.keys(ids).map((key, i) => [key, values[i]!.value.value]))).toEqual(BUILD);
  });

  it('the DI DeviceSet lists each device, of a DeviceType subtype, with its nameplate properties', async () => {
    const devices = await withSession(plc.endpointUrl, async (session) => {
      const di = (await session.readNamespaceArray()).indexOf(DI_NAMESPACE_URI);
      expect(di).toBeGreaterThan(0);
      const browse = async (nodeId: NodeId, referenceTypeId: string, browseDirection = BrowseDirection.Forward) => {
        const [result] = await session.browse([{ nodeId, browseDirection, referenceTypeId, includeSubtypes: true, resultMask: 0x3f }]);
        expect(result!.statusCode).toBe(StatusCodes.Good);
        return result!.references ?? [];
      };
      const found: Record<string, Record<string, unknown>> = {};
      const others: string[] = [];
      for (const ref of await browse(coerceNodeId(`ns=${di};i=${DI_IDS.DeviceSet}`), 'HierarchicalReferences')) {
        // DeviceSet also holds DI's own DeviceFeatures folder: only instances of DeviceType subtypes are devices.
        const supertypes = await browse(coerceNodeId(ref.typeDefinition.toString()), 'HasSubtype', BrowseDirection.Inverse);
        if (!supertypes.some((r) => r.nodeId.toString() === `ns=${di};i=${DI_IDS.DeviceType}`)) {
          others.push(ref.browseName.name!);
          continue;
        }
        const props = await browse(coerceNodeId(ref.nodeId.toString()), 'HasProperty');
        const values = await session.read(props.map((p) => ({ nodeId: coerceNodeId(p.nodeId.toString()), attributeId: AttributeIds.Value })));
        found[ref.browseName.name!] = Object.fromEntries(
          props.map((p, i) => {
            const v = values[i]!.value;
            return [p.browseName.name!, v.dataType === DataType.LocalizedText ? (v.value as { text: string }).text : v.value];
          }),
        );
      }
      expect(others).toEqual(['DeviceFeatures']);
      return found;
    });
    expect(Object.keys(devices).sort()).toEqual([PUMP.name, VALVE.name].sort());
    for (const d of [PUMP, VALVE]) {
      expect(devices[d.name]).toMatchObject({
        Manufacturer: d.manufacturer,
        Model: d.model,
        SerialNumber: d.serialNumber,
        HardwareRevision: d.hardwareRevision,
        SoftwareRevision: d.softwareRevision,
        DeviceRevision: d.deviceRevision,
        ProductInstanceUri: d.productInstanceUri,
        AssetId: d.assetId,
      });
    }
  });

  describe('push certificate management', () => {
    const csr = (session: ClientSession) =>
      new ClientPushCertificateManagement(session).createSigningRequest(
        'DefaultApplicationGroup',
        ClientPushCertificateManagement.rsaSha256ApplicationCertificateType,
        null,
        false,
      );
    const user = (u: { username: string; password: string }): UserIdentityInfo => ({
      type: UserTokenType.UserName,
      userName: u.username,
      password: u.password,
    });

    it('refuses CreateSigningRequest to an anonymous session', async () => {
      const result = await withSession(secure.endpointUrl, csr, undefined, true);
      expect(result.statusCode).toBe(StatusCodes.BadUserAccessDenied);
      expect(result.certificateSigningRequest).toBeUndefined();
    });

    it('refuses a session to the SecurityAdmin name with a wrong password', async () => {
      await expect(withSession(secure.endpointUrl, csr, user({ ...ADMIN, password: 'wrong' }), true)).rejects.toThrow(
        /BadUserAccessDenied|BadIdentityTokenRejected/,
      );
    });

    it('refuses CreateSigningRequest to an authenticated user without the SecurityAdmin role', async () => {
      const result = await withSession(secure.endpointUrl, csr, user(OPERATOR), true);
      expect(result.statusCode).toBe(StatusCodes.BadUserAccessDenied);
    });

    it('answers the SecurityAdmin with a CSR for the key of its current certificate', async () => {
      const result = await withSession(secure.endpointUrl, csr, user(ADMIN), true);
      expect(result.statusCode).toBe(StatusCodes.Good);
      const request = parseCsr(result.certificateSigningRequest!);
      const currentKey = new X509Certificate(secure.certificate).publicKey.export({ type: 'spki', format: 'der' });
      expect(request.publicKey.spki.equals(currentKey)).toBe(true);
    });
  });

  it('a server that accepts the connection and never answers makes the connect attempt time out', async () => {
    const before = hanging.connections;
    const c = client({ transportTimeout: 1_000 });
    try {
      await expect(c.connect(hanging.endpointUrl)).rejects.toThrow();
    } finally {
      await c.disconnect();
    }
    expect(hanging.connections).toBeGreaterThan(before);
  });

  it('a server that answers with random bytes makes the connect attempt fail', async () => {
    const before = garbage.connections;
    const c = client();
    try {
      await expect(c.connect(garbage.endpointUrl)).rejects.toThrow();
    } finally {
      await c.disconnect();
    }
    expect(garbage.connections).toBeGreaterThan(before);
  });

  describe('local discovery server', () => {
    async function onLds<T>(fn: (c: OPCUAClient) => Promise<T>): Promise<T> {
      const c = client();
      try {
        await c.connect(lds.endpointUrl);
        return await fn(c);
      } finally {
        await c.disconnect();
      }
    }

    it('lists a registered server via FindServers, and forgets it when it stops', async () => {
      const registered = await onLds((c) => c.findServers());
      const entry = registered.find((s) => s.applicationUri === plc.applicationUri);
      expect(entry?.discoveryUrls).toContain(plc.endpointUrl);
      expect(lds.registeredServerCount).toBe(1);

      const extra = await startOpcuaServer({ host: '127.0.0.2', registerWith: lds });
      try {
        expect((await onLds((c) => c.findServers())).map((s) => s.applicationUri)).toContain(extra.applicationUri);
      } finally {
        await extra.stop();
      }
      expect((await onLds((c) => c.findServers())).map((s) => s.applicationUri)).not.toContain(extra.applicationUri);
      expect(existsSync(extra.pkiDir)).toBe(false);
    });

    it('answers FindServersOnNetwork with no records: they come only from mDNS, which the fixture keeps off', async () => {
      expect(await onLds((c) => c.findServersOnNetwork())).toEqual([]);
    });
  });
});
