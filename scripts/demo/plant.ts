/**
 * The demo plant, described once: what the OPC UA servers are, which of them
 * policy approves, which sensors carry an enrollment token. run.ts writes the
 * agent's configuration from it and opcuaPlant.ts starts the servers.
 */

export interface DemoServer {
  /** Short name, for what the demo prints. */
  name: string;
  applicationUri: string;
  applicationName: string;
  manufacturer: string;
  product: string;
}

/** The SecurityAdmin the agent signs in as to push certificates (its password is made per run). */
export const SECURITY_ADMIN = 'secadmin';

/** Servers whose applicationUri matches this are approved by policy: their certificate is pushed at once. */
export const AUTO_APPROVED_SERVERS = 'urn:demo-plant:press-*';

export const DEMO_SERVERS: readonly DemoServer[] = [
  {
    name: 'press-1',
    applicationUri: 'urn:demo-plant:press-1',
    applicationName: 'Press 1',
    manufacturer: 'Demo Presses GmbH',
    product: 'Hydraulic press controller',
  },
  {
    name: 'mixer-2',
    applicationUri: 'urn:demo-plant:mixer-2',
    applicationName: 'Mixer 2',
    manufacturer: 'Demo Process Systems',
    product: 'Batch mixer PLC',
  },
];

export interface SensorGroup {
  /** Device ids are the prefix and a 5-digit index. */
  idPrefix: string;
  count: number;
  manufacturer: string;
  model: string;
  /** With an enrollment token, policy approves them; without, they wait for a technician. */
  withToken: boolean;
  /** Seconds after the agent is ready that the group starts enrolling. */
  afterSeconds: number;
}

export const SENSOR_GROUPS: readonly SensorGroup[] = [
  { idPrefix: 'temp-', count: 3, manufacturer: 'Demo Sensors Ltd', model: 'TS-100 temperature', withToken: true, afterSeconds: 0 },
  { idPrefix: 'vibration-', count: 2, manufacturer: 'Demo Sensors Ltd', model: 'VS-20 vibration', withToken: false, afterSeconds: 3 },
  { idPrefix: 'flow-', count: 2, manufacturer: 'Demo Flow AG', model: 'FM-7 flow meter', withToken: true, afterSeconds: 10 },
];

/** Where the gateway is, sent with every record to the CMMS. */
export const DEMO_LOCATION = { site: 'demo-plant', area: 'assembly', line: 'L1', cell: '' } as const;
