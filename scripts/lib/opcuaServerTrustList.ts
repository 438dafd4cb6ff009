import { BinaryStream } from 'node-opcua-binary-stream';
import type { OPCUACertificateManager } from 'node-opcua-certificate-manager';
import { DataType, StatusCodes, type StatusCode } from 'node-opcua-client';
import type { OPCUAServer } from 'node-opcua-server';
import { TrustListDataType } from 'node-opcua-types';

/** The little of node-opcua's address space types used here (node-opcua-address-space is no direct dependency). */
interface Node {
  getChildByName(name: string): Node;
  getComponentByName(name: string): Node;
}
type MethodResult = { statusCode: StatusCode; outputArguments?: { dataType: DataType; value: unknown }[] };
type Callback = (err: Error | null, result?: MethodResult) => void;
interface Method extends Node {
  bindMethod(fn: (input: unknown[], context: unknown) => Promise<MethodResult>): void;
  /** node-opcua's bound implementation, callback style (library internals: Close is not callable otherwise). */
  _asyncExecutionFunction: (this: Method, input: unknown[], context: unknown, callback: Callback) => void;
}

/**
 * Completes what node-opcua 2.157 leaves out of OPC UA Part 12 (7.8.2.x):
 * its TrustList takes Open and Write (into an in-memory file) but its
 * CloseAndUpdate is a stub that neither closes the file nor applies it. Here
 * CloseAndUpdate closes the handle, decodes the TrustListDataType written,
 * and adds its certificates and CRLs to the server's PKI (what a complete
 * server does; removing what the list leaves out is not needed by the
 * tests), answering ApplyChangesRequired false. A fixture server with this
 * takes the gateway's CRLs over OPC UA.
 */
export function completeTrustListWrites(server: OPCUAServer, certificateManager: OPCUACertificateManager): void {
  const serverObject = server.engine.addressSpace!.rootFolder.objects.server as unknown as Node;
  const group = serverObject.getChildByName('ServerConfiguration').getChildByName('CertificateGroups').getComponentByName('DefaultApplicationGroup');
  // node-opcua-file-transfer keeps the file's data on the node (library internals).
  const trustList = group.getComponentByName('TrustList') as Node & { $fileData: { _fs: { readFileSync(f: string): Buffer }; filename: string } };
  const close = trustList.getChildByName('Close') as Method;
  const closeAndUpdate = trustList.getChildByName('CloseAndUpdate') as Method;
  closeAndUpdate.bindMethod(async (input, context) => {
    const written = trustList.$fileData._fs.readFileSync(trustList.$fileData.filename);
    const closed = await new Promise<MethodResult>((resolve, reject) =>
      close._asyncExecutionFunction.call(close, input, context, (err, r) => (err ? reject(err) : resolve(r!))),
    );
    if (!closed.statusCode.isGood()) return closed;
    const list = new TrustListDataType();
    list.decode(new BinaryStream(written));
    for (const c of list.trustedCertificates ?? []) await certificateManager.trustCertificate(Buffer.from(c));
    for (const c of list.issuerCertificates ?? []) await certificateManager.addIssuer(Buffer.from(c));
    for (const crl of [...(list.trustedCrls ?? []), ...(list.issuerCrls ?? [])]) await certificateManager.addRevocationList(Buffer.from(crl));
    return { statusCode: StatusCodes.Good, outputArguments: [{ dataType: DataType.Boolean, value: false }] };
  });
}
