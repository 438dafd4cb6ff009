import type { ConfigStatus } from '../configuration/types.js';
import type { Device, DeviceEvent } from '../inventory/device.js';
import type { EnrollmentRequest } from './enrollmentRepository.js';
import type { PushJob } from './pushRepository.js';
import type { Repositories } from './repositories.js';
import type { DeviceSync } from './syncRepository.js';

/** A request waiting for a technician, without what only the daemon needs (the CSR, the MQTT correlation data). */
export type WaitingRequest = Omit<EnrollmentRequest, 'csr' | 'correlationData'>;

/** One device as `GET /api/v1/devices/{id}` and `edge-agent devices show` give it. */
export interface DeviceDetails {
  device: Device;
  pendingRequests: WaitingRequest[];
  /** OPC UA servers only, once a push job exists. */
  push?: PushJob;
  history: DeviceEvent[];
  /** Where the device stands with the CMMS (nothing waits: `synced`, also when sync is off). */
  sync: DeviceSync;
  /** Its configuration profile and where it stands (docs/device-configuration.md); profile null: none applies. */
  configuration: DeviceConfiguration;
}

export interface DeviceConfiguration {
  profile: string | null;
  version: number | null;
  /** The profile it is pinned to (assign), if any. */
  pinned: string | null;
  status: ConfigStatus;
  error: string | null;
  desiredAt: Date | null;
  reportedVersion: number | null;
  reportedAt: Date | null;
  checkedAt: Date | null;
  labels: Record<string, string>;
}

/** A device's configuration as its details show it. */
export function deviceConfiguration(repos: Pick<Repositories, 'configs'>, id: string): DeviceConfiguration {
  const c = repos.configs.get(id);
  return {
    profile: c?.profile ?? null,
    version: c?.desiredVersion ?? null,
    pinned: c?.pinnedProfile ?? null,
    status: c?.status ?? 'none',
    error: c?.error ?? null,
    desiredAt: c?.desiredAt ?? null,
    reportedVersion: c?.reportedVersion ?? null,
    reportedAt: c?.reportedAt ?? null,
    checkedAt: c?.checkedAt ?? null,
    labels: repos.configs.labels(id),
  };
}

/**
 * A device's record, its requests waiting, its push status and its history:
 * the one query behind the API's device page and the CLI's read of the
 * database when the daemon is down. Undefined when there is no such device.
 */
export function deviceDetails(repos: Pick<Repositories, 'devices' | 'enrollments' | 'pushes' | 'sync' | 'configs'>, id: string): DeviceDetails | undefined {
  const { devices, enrollments, pushes } = repos;
  const device = devices.get(id);
  if (!device) return undefined;
  const pendingRequests = enrollments.withStatus('pending', id).map(({ csr: _csr, correlationData: _c, ...r }) => r);
  const push = device.protocol === 'opcua' ? pushes.get(id) : undefined;
  return {
    device,
    pendingRequests,
    ...(push ? { push } : {}),
    history: devices.events(id),
    sync: repos.sync.deviceSync(id),
    configuration: deviceConfiguration(repos, id),
  };
}
