import type { Migration } from '../migrate.js';
import { m0001AgentRuns } from './0001_agentRuns.js';
import { m0002Certificates } from './0002_certificates.js';
import { m0003Devices } from './0003_devices.js';
import { m0004DiscoveryRuns } from './0004_discoveryRuns.js';
import { m0005OpcuaPush } from './0005_opcuaPush.js';
import { m0006SyncOutbox } from './0006_syncOutbox.js';
import { m0007Users } from './0007_users.js';
import { m0008TechnicianApi } from './0008_technicianApi.js';
import { m0009OpcuaCrl } from './0009_opcuaCrl.js';
import { m0010ActionCrlReason } from './0010_actionCrlReason.js';
import { m0011DirectorySessions } from './0011_directorySessions.js';
import { m0012ConsoleSessions } from './0012_consoleSessions.js';
import { m0013DeviceConfiguration } from './0013_deviceConfiguration.js';
import { m0014Report } from './0014_report.js';
import { m0015DeviceCertificateIndex } from './0015_deviceCertificateIndex.js';

/**
 * Every schema change, in order. Append only: a released migration is never
 * edited, since databases in the field have already run it.
 */
export const MIGRATIONS: readonly Migration[] = [
  m0001AgentRuns,
  m0002Certificates,
  m0003Devices,
  m0004DiscoveryRuns,
  m0005OpcuaPush,
  m0006SyncOutbox,
  m0007Users,
  m0008TechnicianApi,
  m0009OpcuaCrl,
  m0010ActionCrlReason,
  m0011DirectorySessions,
  m0012ConsoleSessions,
  m0013DeviceConfiguration,
  m0014Report,
  m0015DeviceCertificateIndex,
];
