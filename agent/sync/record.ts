import type { CertificateRecord } from '../../certs/store.js';
import type { Device, Location } from '../inventory/device.js';
import type { ConfigurationSummary } from '../store/syncRepository.js';

export type { Location } from '../inventory/device.js';

/**
 * The device record sent upstream (docs/upstream-api.md): what a
 * maintenance system needs, named after the OPC UA DI nameplate and the
 * Asset Administration Shell digital nameplate. Absent facts are null, so
 * a receiver can tell "unknown" from "not sent".
 */
export interface UpstreamRecord {
  deviceId: string;
  assetTag: string | null;
  manufacturer: { name: string | null; uri: string | null };
  model: string | null;
  productCode: string | null;
  serialNumber: string | null;
  productInstanceUri: string | null;
  hardwareRevision: string | null;
  firmwareVersion: string | null;
  softwareVersion: string | null;
  deviceClass: string;
  displayName: string | null;
  location: Location;
  source: { protocol: 'mqtt' | 'opcua'; endpoint: string | null; applicationUri: string | null; topics: string[] };
  certificate: { status: string; serial: string; thumbprint: string; notAfter: string } | null;
  /** The configuration profile and version the agent wants the device to run, and whether it does; null without one. */
  configuration: ConfigurationSummary | null;
  lifecycleState: string;
  firstSeen: string;
  lastSeen: string;
  online: boolean;
}

export interface UpstreamItem {
  deviceId: string;
  revision: number;
  op: 'upsert' | 'retire';
  observedAt: string;
  record: UpstreamRecord;
}

const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);
const obj = (v: unknown): Record<string, unknown> | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

/**
 * The MQTT topics a device was seen on, from what enrollment and discovery
 * recorded in its `source` (each keeps its latest): the enrollment request
 * topic (`provisioning` is `{mqtt.topicPrefix}/{id}`), and the announcement
 * topic of each discovery source (agent/discovery/announcements.ts), rebuilt
 * from its details where they do not hold it.
 */
function topicsOf(source: Record<string, unknown>): string[] {
  const topics: string[] = [];
  const provisioning = str(source.provisioning);
  if (provisioning) topics.push(`${provisioning}/request`);
  for (const [key, value] of Object.entries(source)) {
    const d = obj(value);
    if (!d || key === 'opcua') continue;
    const parts = (...levels: unknown[]) => (levels.every((l) => str(l) !== null) ? (levels as string[]).join('/') : null);
    const topic =
      str(d.topic) ??
      (key === 'sparkplug' ? parts('spBv1.0', d.group, d.message, d.edgeNode, ...(d.device !== undefined ? [d.device] : [])) : null) ??
      (key === 'homeassistant' ? parts('homeassistant', d.component, ...(d.nodeId !== undefined ? [d.nodeId] : []), d.objectId, 'config') : null);
    if (topic) topics.push(topic);
  }
  return [...new Set(topics)].sort();
}

/**
 * The record of a device at its current revision; `certificate` is its
 * current certificate record, if any; `location` is the gateway's, which
 * the fields a technician set on the device override; `configuration` its
 * device_config summary (SyncRepository.awaitingSync), null without one.
 */
export function upstreamItem(
  device: Device,
  certificate: CertificateRecord | undefined,
  location: Location,
  configuration: ConfigurationSummary | null = null,
): UpstreamItem {
  const opcua = (device.source.opcua ?? {}) as {
    endpointUrl?: string;
    applicationUri?: string;
    productUri?: string;
    buildInfo?: { softwareVersion?: string; manufacturerName?: string };
    deviceSet?: { productInstanceUri?: string; assetId?: string; softwareRevision?: string }[];
  };
  const di = opcua.deviceSet?.[0];
  const record: UpstreamRecord = {
    deviceId: device.id,
    assetTag: str(device.assetTag) ?? str(di?.assetId),
    manufacturer: { name: str(device.nameplate.manufacturer), uri: null },
    model: str(device.nameplate.model),
    productCode: str(opcua.productUri),
    serialNumber: str(device.nameplate.serialNumber),
    productInstanceUri: str(di?.productInstanceUri),
    hardwareRevision: str(device.nameplate.hardwareRevision),
    firmwareVersion: str(device.nameplate.firmwareVersion),
    softwareVersion: str(opcua.buildInfo?.softwareVersion),
    deviceClass: device.protocol === 'opcua' ? 'opcua-server' : 'mqtt-device',
    displayName: str(device.nameplate.displayName),
    location: { ...location, ...device.location },
    source: { protocol: device.protocol, endpoint: str(opcua.endpointUrl), applicationUri: str(opcua.applicationUri), topics: topicsOf(device.source) },
    certificate: certificate
      ? { status: certificate.status, serial: certificate.serial, thumbprint: certificate.thumbprint, notAfter: certificate.notAfter.toISOString() }
      : null,
    configuration: configuration ? { profile: configuration.profile, version: configuration.version, status: configuration.status } : null,
    lifecycleState: device.state,
    firstSeen: device.firstSeen.toISOString(),
    lastSeen: device.lastSeen.toISOString(),
    online: device.online,
  };
  return {
    deviceId: device.id,
    revision: device.revision,
    op: device.state === 'decommissioned' ? 'retire' : 'upsert',
    observedAt: device.updatedAt.toISOString(),
    record,
  };
}
