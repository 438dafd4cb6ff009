import type { Protocol } from '../inventory/device.js';

/**
 * The types shared by the configuration service (profiles, desired state,
 * status: configService.ts) and the protocol deliverers (MQTT:
 * mqttConfig.ts; OPC UA: opcuaConfig.ts). A deliverer only moves values to
 * and from a device; what is wanted, what counts as in sync and every
 * record in the database are the service's.
 */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/**
 * none: no profile applies; pending: a version is committed and not yet
 * confirmed (published and waiting for the device's report, or due for a
 * write); in_sync: the device reported, or the server was read back with,
 * the desired version's values; drifted: an OPC UA server's values were
 * later found to differ; failed: the device refused, or a write failed for
 * good (reason in `error`).
 */
export type ConfigStatus = 'none' | 'pending' | 'in_sync' | 'drifted' | 'failed';
export const CONFIG_STATUSES: readonly ConfigStatus[] = ['none', 'pending', 'in_sync', 'drifted', 'failed'];

/** OPC UA built-in data types a profile may write (Part 6, 5.1.2). */
export const OPCUA_DATA_TYPES = ['Boolean', 'SByte', 'Byte', 'Int16', 'UInt16', 'Int32', 'UInt32', 'Int64', 'UInt64', 'Float', 'Double', 'String'] as const;
export type OpcuaDataType = (typeof OPCUA_DATA_TYPES)[number];

/** Where an OPC UA profile's value goes: a node of the server and its data type. */
export interface OpcuaNodeBinding {
  nodeId: string;
  dataType: OpcuaDataType;
}

/** What one device should run: a version of a profile, with that device's overrides applied. */
export interface DesiredConfig {
  deviceId: string;
  protocol: Protocol;
  /** The device's name on its protocol (MQTT device id / certificate CN; OPC UA: the inventory name). */
  name: string;
  profile: string;
  version: number;
  /** SHA-256 (lower-case hex) of the canonical JSON of `values` (keys sorted): a report that names it is about these values. */
  sha256: string;
  values: Record<string, JsonValue>;
  /** OPC UA only: for each key of `values`, the node it is written to. */
  nodes?: Record<string, OpcuaNodeBinding>;
  /** OPC UA: write the values again when a drift check finds them changed. */
  reapplyOnDrift: boolean;
}

/**
 * What a delivery attempt came to. `published`: MQTT, the broker took the
 * retained message; the status stays pending until the device reports.
 * `verified`: OPC UA, written and read back equal. `failed`: `retry`
 * false for a refusal that retrying cannot mend (a NodeId that does not
 * exist, a data type the server does not take): the status becomes failed
 * at once; `retry` true (unreachable, timeout): tried again with backoff.
 */
export type DeliveryOutcome =
  | { kind: 'published' }
  | { kind: 'verified'; observed: Record<string, JsonValue> }
  | { kind: 'failed'; reason: string; retry: boolean };

export interface ConfigDeliverer {
  readonly protocol: Protocol;
  /** Sends a desired configuration that is already committed. Must not throw: a failure is an outcome. */
  deliver(desired: DesiredConfig, signal: AbortSignal): Promise<DeliveryOutcome>;
  /** The device has no desired configuration any more (unassigned, decommissioned): take back what was published (MQTT: clear the retained message). */
  withdraw(device: { deviceId: string; name: string }): Promise<void>;
}

/** A device's report of what it did with a desired configuration (MQTT `<topicRoot>/<id>/reported`). */
export interface DeviceReport {
  profile: string;
  version: number;
  sha256?: string;
  status: 'applied' | 'refused';
  /** Why the device refused (required with status refused). */
  error?: string;
}

/** What an OPC UA drift check read back. */
export interface Observation {
  /** Values read, per key of the desired values (null where the read failed). */
  observed: Record<string, JsonValue | null>;
  differences: { key: string; nodeId: string; expected: JsonValue; actual: JsonValue | null; error?: string }[];
}

/**
 * The configuration service as the deliverers see it. Deliverers register
 * when their transport starts and unregister when it stops.
 */
export interface ConfigurationHub {
  register(deliverer: ConfigDeliverer): void;
  unregister(protocol: Protocol): void;
  /**
   * A device reported (MQTT; `name` is the certificate CN it published
   * under). Records it and answers what it concluded; a report of a version
   * the device was never sent, or of another profile, is refused
   * (`accepted: false` with the reason) and changes nothing.
   */
  reported(protocol: Protocol, name: string, report: DeviceReport): { accepted: boolean; status?: ConfigStatus; reason?: string };
  /** The current desired configuration of every device of a protocol that has one (a republish, a drift check). */
  current(protocol: Protocol): DesiredConfig[];
  /** An OPC UA drift check's result (recorded as drifted or in sync; re-applied if the profile says so). */
  observed(deviceId: string, observation: Observation): void;
}
