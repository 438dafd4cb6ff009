import { AccessLevelFlag, DataType, ObjectIds, PermissionFlag, resolveNodeId, Variant, VariantArrayType } from 'node-opcua-client';
import type { OPCUAServer } from 'node-opcua-server';

type UAVariable = ReturnType<ReturnType<NonNullable<OPCUAServer['engine']['addressSpace']>['getOwnNamespace']>['addVariable']>;

/** A configuration variable of the fixture: what a profile's NodeId binding points at. */
export interface FixtureConfigNode {
  /** The NodeId's string identifier, in the server's own namespace (`ns=<own>;s=<id>`). */
  id: string;
  dataType: 'Double' | 'Float' | 'SByte' | 'Byte' | 'Int16' | 'UInt16' | 'Int32' | 'UInt32' | 'Int64' | 'UInt64' | 'Boolean' | 'String';
  /** 64-bit integers as node-opcua holds them: [high, low] 32-bit words. */
  initial: number | boolean | string | [number, number];
  /** false: AccessLevel CurrentRead only, as a measured value or a nameplate field is (default true). */
  writable?: boolean;
  /** 'securityAdmin': only the SecurityAdmin role may write it (RolePermissions); other users read it without CurrentWrite in their UserAccessLevel. */
  writableBy?: 'securityAdmin';
}

/** The configuration variables `configNodes: true` installs: one writable variable per type a test needs, and one read-only. */
export const CONFIG_NODES: readonly FixtureConfigNode[] = [
  { id: 'Config.SamplingIntervalMs', dataType: 'Double', initial: 1000 },
  { id: 'Config.Gain', dataType: 'Float', initial: 0.5 },
  { id: 'Config.AlarmThreshold', dataType: 'Int32', initial: 100 },
  { id: 'Config.Channel', dataType: 'UInt16', initial: 1 },
  { id: 'Config.Enabled', dataType: 'Boolean', initial: false },
  { id: 'Config.Label', dataType: 'String', initial: 'unset' },
  { id: 'Config.FirmwareVersion', dataType: 'String', initial: '1.0.0', writable: false },
  { id: 'Config.CalibrationOffset', dataType: 'Double', initial: 0, writableBy: 'securityAdmin' },
];

const READ = PermissionFlag.Browse | PermissionFlag.Read;
/** Write for SecurityAdmin only; everyone else (AuthenticatedUser, Anonymous) reads. */
const ADMIN_WRITES = [
  { roleId: resolveNodeId(ObjectIds.WellKnownRole_SecurityAdmin), permissions: READ | PermissionFlag.Write },
  { roleId: resolveNodeId(ObjectIds.WellKnownRole_AuthenticatedUser), permissions: READ },
  { roleId: resolveNodeId(ObjectIds.WellKnownRole_Anonymous), permissions: READ },
];

/** The test's side of the configuration variables: NodeIds to bind, values to read and change behind the agent's back. */
export interface FixtureConfig {
  /** The full NodeId (`ns=<own namespace>;s=<id>`) of a configuration variable. */
  nodeId(id: string): string;
  /** The variable's value as the server holds it. */
  value(id: string): unknown;
  /** Changes a value on the server's side, as an operator at the machine would: not counted as a client write. */
  setValue(id: string, value: number | boolean | string | [number, number]): void;
  /** How many times clients wrote the variable's value (a write of the value it already had counts too: node-opcua stamps a new source time). */
  writes(id: string): number;
}

/**
 * Adds a `Configuration` folder under Objects with the variables of `nodes`,
 * NodeIds `ns=<own namespace>;s=<id>`. Writable ones take client writes of
 * their exact data type (node-opcua answers BadTypeMismatch otherwise).
 */
export function installConfigNodes(server: OPCUAServer, nodes: readonly FixtureConfigNode[] = CONFIG_NODES): FixtureConfig {
  const addressSpace = server.engine.addressSpace;
  if (!addressSpace) throw new Error('installConfigNodes needs an initialised server');
  const namespace = addressSpace.getOwnNamespace();
  const folder = namespace.addFolder(addressSpace.rootFolder.objects, { browseName: 'Configuration' });
  const variables = new Map<string, { variable: UAVariable; dataType: DataType; writes: number }>();
  let local = false;
  for (const node of nodes) {
    const dataType = DataType[node.dataType];
    const variable = namespace.addVariable({
      componentOf: folder,
      browseName: node.id.replace(/^Config\./, ''),
      nodeId: `s=${node.id}`,
      dataType: node.dataType,
      accessLevel: node.writable === false ? AccessLevelFlag.CurrentRead : AccessLevelFlag.CurrentRead | AccessLevelFlag.CurrentWrite,
      userAccessLevel: node.writable === false ? AccessLevelFlag.CurrentRead : AccessLevelFlag.CurrentRead | AccessLevelFlag.CurrentWrite,
      value: new Variant({ dataType, arrayType: VariantArrayType.Scalar, value: node.initial }),
      ...(node.writableBy === 'securityAdmin' ? { rolePermissions: ADMIN_WRITES } : {}),
    });
    const entry = { variable, dataType, writes: 0 };
    variable.on('value_changed', () => {
      if (!local) entry.writes++;
    });
    variables.set(node.id, entry);
  }
  const get = (id: string) => {
    const entry = variables.get(id);
    if (!entry) throw new Error(`the fixture has no configuration variable ${id}`);
    return entry;
  };
  const ns = namespace.index;
  return {
    nodeId: (id) => `ns=${ns};s=${get(id).variable.nodeId.value as string}`,
    value: (id) => get(id).variable.readValue().value.value as unknown,
    setValue(id, value) {
      const entry = get(id);
      local = true;
      try {
        entry.variable.setValueFromSource(new Variant({ dataType: entry.dataType, arrayType: VariantArrayType.Scalar, value }));
      } finally {
        local = false;
      }
    },
    writes: (id) => get(id).writes,
  };
}
