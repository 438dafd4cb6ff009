import { DataType, LocalizedText } from 'node-opcua-client';
import type { OPCUAServer } from 'node-opcua-server';

/** The OPC UA DI companion specification (OPC 10000-100) namespace. */
export const DI_NAMESPACE_URI = 'http://opcfoundation.org/UA/DI/';
/** NodeIds inside the DI namespace (numeric identifiers from Opc.Ua.Di.NodeSet2.xml). */
export const DI_IDS = { DeviceSet: 5001, DeviceType: 1002 } as const;

/** One device of a DI DeviceSet, with the nameplate properties the agent reads. */
export interface FixtureDevice {
  /** Browse name of the device object (in the server's own namespace). */
  name: string;
  manufacturer: string;
  model: string;
  serialNumber: string;
  hardwareRevision: string;
  softwareRevision: string;
  deviceRevision: string;
  productInstanceUri: string;
  assetId: string;
}

/** A DI device with every nameplate property set, for the tests that read one back. */
export const SAMPLE_PUMP: FixtureDevice = {
  name: 'Pump-7',
  manufacturer: 'ACME Pumps',
  model: 'CP-300',
  serialNumber: 'SN-0042',
  hardwareRevision: 'HW-B',
  softwareRevision: '4.1.2',
  deviceRevision: 'R3',
  productInstanceUri: 'urn:acme:pumps:cp-300:sn-0042',
  assetId: 'PLANT1-P-007',
};

/**
 * Instantiates each device under DI's DeviceSet. DeviceType is abstract in
 * DI 1.04, so the devices are of a concrete subtype `FixtureDeviceType`
 * declared in the server's own namespace, as a vendor's model would be.
 * ProductInstanceUri and AssetId are optional members of the type (AssetId
 * comes from ComponentType): they are asked for explicitly.
 */
export function installDeviceSet(server: OPCUAServer, devices: FixtureDevice[], reference: 'HasComponent' | 'Organizes'): void {
  const addressSpace = server.engine.addressSpace;
  if (!addressSpace) throw new Error('installDeviceSet needs an initialised server');
  const di = addressSpace.getNamespaceIndex(DI_NAMESPACE_URI);
  if (di < 0) throw new Error('the DI nodeset is not loaded');
  const deviceSet = addressSpace.findNode(`ns=${di};i=${DI_IDS.DeviceSet}`);
  const deviceType = addressSpace.findObjectType('DeviceType', di);
  if (!deviceSet || !deviceType) throw new Error('DI DeviceSet or DeviceType not found');
  const fixtureType = addressSpace.getOwnNamespace().addObjectType({ browseName: 'FixtureDeviceType', subtypeOf: deviceType });

  for (const device of devices) {
    const node = fixtureType.instantiate({
      browseName: device.name,
      ...(reference === 'HasComponent' ? { componentOf: deviceSet } : { organizedBy: deviceSet }),
      optionals: ['ProductInstanceUri', 'AssetId'],
    });
    const set = (property: string, dataType: DataType, value: unknown) => {
      const variable = node.getPropertyByName(property, di);
      if (!variable) throw new Error(`${device.name} has no DI property ${property}`);
      variable.setValueFromSource({ dataType, value });
    };
    set('Manufacturer', DataType.LocalizedText, new LocalizedText({ text: device.manufacturer, locale: 'en' }));
    set('Model', DataType.LocalizedText, new LocalizedText({ text: device.model, locale: 'en' }));
    set('SerialNumber', DataType.String, device.serialNumber);
    set('HardwareRevision', DataType.String, device.hardwareRevision);
    set('SoftwareRevision', DataType.String, device.softwareRevision);
    set('DeviceRevision', DataType.String, device.deviceRevision);
    set('ProductInstanceUri', DataType.String, device.productInstanceUri);
    set('AssetId', DataType.String, device.assetId);
    set('DeviceManual', DataType.String, '');
    set('RevisionCounter', DataType.Int32, 0);
  }
}
