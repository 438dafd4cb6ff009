/** The shapes the page reads from /api/v1, as JSON carries them (dates are ISO strings). See agent/api/*Routes.ts. */

export type DeviceState = 'discovered' | 'pending' | 'provisioned' | 'rejected' | 'revoked' | 'decommissioned';
export const DEVICE_STATES: readonly DeviceState[] = ['pending', 'discovered', 'provisioned', 'rejected', 'revoked', 'decommissioned'];
export type Protocol = 'mqtt' | 'opcua';
export const PROTOCOL_NAMES: Record<Protocol, string> = { mqtt: 'MQTT', opcua: 'OPC UA' };
export const LOCATION_FIELDS = ['site', 'area', 'line', 'cell'] as const;
export type LocationField = (typeof LOCATION_FIELDS)[number];
export type Location = Partial<Record<LocationField, string>>;

export interface Principal {
  name: string;
  role: 'admin' | 'technician' | 'viewer' | 'contractor';
  source: 'local' | 'directory';
  scope?: unknown[];
  mayDecide?: boolean;
  ranges?: string[];
  expiresAt?: string;
}

export interface ConsoleSession {
  csrfToken: string;
  principal: Principal;
  permissions?: string[];
}

export interface Device {
  id: string;
  protocol: Protocol;
  name: string;
  state: DeviceState;
  blocked: boolean;
  preapproved: boolean;
  nameplate: Record<string, string | undefined>;
  source: Record<string, unknown>;
  certificateSerial?: string;
  reason?: string;
  assetTag?: string;
  location?: Location;
  online: boolean;
  firstSeen: string;
  lastSeen: string;
  revision: number;
  updatedAt: string;
}

export interface Page<T> {
  total: number;
  items: T[];
}

export interface DeviceEvent {
  id: number;
  at: string;
  from?: DeviceState;
  to: DeviceState;
  cause: string;
  actor: string;
  details?: Record<string, unknown>;
}

export interface PushJob {
  deviceId: string;
  applicationUri: string;
  approvedBy: string;
  status: 'waiting' | 'running' | 'done' | 'failed' | 'unsupported' | 'stopped';
  step: string;
  attempts: number;
  nextAttemptAt?: string;
  serial?: string;
  appliedSerial?: string;
  reason?: string;
  crlDelivered?: boolean;
  updatedAt: string;
}

export interface WaitingRequest {
  requestId: string;
  spkiSha256: string;
  reason: string;
  receivedAt: string;
}

/** Where the device stands with the CMMS, as GET /api/v1/devices/{id} says (agent/store/syncRepository.ts DeviceSync). */
export type DeviceSync =
  | { state: 'synced' }
  | { state: 'off' }
  | { state: 'waiting'; revision: number; since: string; sending: boolean }
  | { state: 'refused'; revision: number; since: string; error: string; status?: number };

export interface DeviceDetails {
  device: Device;
  pendingRequests: WaitingRequest[];
  push?: PushJob;
  history: DeviceEvent[];
  /** Where the device stands with the CMMS (absent from an agent older than the console). */
  sync?: DeviceSync;
}

export interface Certificate {
  serial: string;
  issuer: string;
  profile: string;
  identity: string;
  subject: string;
  san: string;
  notBefore: string;
  notAfter: string;
  thumbprint: string;
  status: 'valid' | 'revoked' | 'superseded';
  issuedAt: string;
  revokedAt?: string;
  revocationReason?: string;
  pem?: string;
}

export interface DiscoveryRun {
  id: number;
  protocol: Protocol;
  trigger: string;
  actor: string;
  status: 'requested' | 'running' | 'done' | 'failed';
  requestedAt: string;
  startedAt?: string;
  finishedAt?: string;
  targetsTotal: number;
  targetsDone: number;
  found: number;
  errors: number;
  error?: string;
  request?: { targets: string[] };
  cancelledBy?: string;
}

export interface DiscoveryTarget {
  target: string;
  source: string;
  status: 'found' | 'nothing' | 'error' | 'skipped';
  detail?: string;
  deviceId?: string;
  at: string;
}

export interface Progress {
  runId: number;
  phase: string;
  total: number;
  done: number;
  found: number;
  errors: number;
  scanned?: { done: number; total: number };
}

export interface SyncStatus {
  enabled: boolean;
  receiver?: string;
  connected?: boolean;
  paused?: string;
  lastSuccess?: string;
  lastSuccessAt?: string;
  lastError?: string;
  nextAttemptAt?: string;
  backlog: number;
  deadLetters: number;
  stuck?: unknown;
}

export interface Alarm {
  code: string;
  severity: 'warning' | 'critical';
  message: string;
  link?: string;
}

export interface Overview {
  devices: { total: number; byState: Partial<Record<DeviceState, number>>; byProtocol: Partial<Record<Protocol, number>>; online: number };
  runs: { active: number; recent: DiscoveryRun[] };
  sync?: SyncStatus;
  certificates?: { valid?: number; expiringSoon: number; before: string };
  alarms: Alarm[];
}

export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  role: string;
  action: string;
  target: string;
  outcome: string;
  details?: Record<string, unknown>;
}

export interface UserRow {
  id?: number;
  name: string;
  role: string | null;
  source: 'local' | 'directory';
  disabledAt?: string;
  createdAt?: string;
  lastLoginAt?: string;
}

export interface ApiTokenRow {
  id: number;
  userId: number;
  label: string;
  createdAt: string;
  expiresAt?: string;
  revokedAt?: string;
  lastUsedAt?: string;
}
