/** The device model shared by onboarding, discovery, the CLI and (later) sync. */
export type DeviceState = 'discovered' | 'pending' | 'provisioned' | 'rejected' | 'revoked' | 'decommissioned';
export type Protocol = 'mqtt' | 'opcua';
/** Every state and protocol, for checking what a command line or a query names. */
export const DEVICE_STATES: readonly DeviceState[] = ['discovered', 'pending', 'provisioned', 'rejected', 'revoked', 'decommissioned'];
export const PROTOCOLS: readonly Protocol[] = ['mqtt', 'opcua'];

export interface Nameplate {
  manufacturer?: string;
  model?: string;
  serialNumber?: string;
  hardwareRevision?: string;
  firmwareVersion?: string;
  displayName?: string;
}

/** Where a device is in the plant: set by technicians per device, else the gateway's sync.location. */
export interface Location {
  site?: string;
  area?: string;
  line?: string;
  cell?: string;
}

export const LOCATION_FIELDS = ['site', 'area', 'line', 'cell'] as const;

export interface Device {
  /** Stable inventory key: `<protocol>:<name>`, e.g. mqtt:pump-7. */
  id: string;
  protocol: Protocol;
  /** The device id on its protocol (the MQTT device id and certificate CN). */
  name: string;
  state: DeviceState;
  /** A technician rejected or revoked it: requests wait for a technician whatever the rules say. */
  blocked: boolean;
  /** A technician approved it before it asked: its next request is approved. */
  preapproved: boolean;
  nameplate: Nameplate;
  source: Record<string, unknown>;
  certificateSerial?: string;
  reason?: string;
  /** The plant's asset tag, set by a technician. */
  assetTag?: string;
  /** Where it is, set by a technician (fields not set fall back to the gateway's location). */
  location?: Location;
  online: boolean;
  firstSeen: Date;
  lastSeen: Date;
  /** Increases with every change of the record (the upstream sync orders by it). */
  revision: number;
  updatedAt: Date;
}

export interface DeviceEvent {
  id: number;
  at: Date;
  from?: DeviceState;
  to: DeviceState;
  cause: string;
  actor: string;
  details?: Record<string, unknown>;
}

/**
 * The state machine: which transitions exist. A transition not listed is a
 * bug in the caller and is refused, so the audit never shows an impossible
 * history. Staying in a state (an update) is always allowed except out of
 * decommissioned, which is final.
 */
const TRANSITIONS: Record<DeviceState | 'new', readonly DeviceState[]> = {
  new: ['discovered', 'pending', 'provisioned', 'rejected'],
  discovered: ['pending', 'provisioned', 'rejected', 'decommissioned'],
  pending: ['provisioned', 'rejected', 'decommissioned'],
  provisioned: ['revoked', 'decommissioned'],
  rejected: ['pending', 'provisioned', 'decommissioned'],
  revoked: ['pending', 'provisioned', 'decommissioned'],
  decommissioned: [],
};

export function canTransition(from: DeviceState | undefined, to: DeviceState): boolean {
  if (from === to) return from !== 'decommissioned';
  return TRANSITIONS[from ?? 'new'].includes(to);
}

export const deviceKey = (protocol: Protocol, name: string): string => `${protocol}:${name}`;
