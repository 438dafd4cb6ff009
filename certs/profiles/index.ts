import { CertError } from '../errors.js';
import { agentClient } from './agentClient.js';
import { brokerServer } from './brokerServer.js';
import { mqttDevice } from './mqttDevice.js';
import { opcuaApplication } from './opcuaApplication.js';
import { PROFILE_NAMES, type Profile, type ProfileName } from './profile.js';

const PROFILES: Record<ProfileName, Profile> = {
  'mqtt-device': mqttDevice,
  'opcua-application': opcuaApplication,
  'broker-server': brokerServer,
  'agent-client': agentClient,
};

export function profileNamed(name: string): Profile {
  if (!(PROFILE_NAMES as readonly string[]).includes(name)) {
    throw new CertError('PROFILE_UNKNOWN', `unknown profile ${JSON.stringify(name)}; one of ${PROFILE_NAMES.join(', ')}`);
  }
  return PROFILES[name as ProfileName];
}

export { PROFILE_NAMES, type Profile, type ProfileName };
