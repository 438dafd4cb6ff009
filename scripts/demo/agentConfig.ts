import { stringify } from 'yaml';
import { AUTO_APPROVED_SERVERS, DEMO_LOCATION, SECURITY_ADMIN } from './plant.js';

export interface DemoConfigInput {
  /** The agent's data directory (database, CA, admin.token). */
  dataDir: string;
  /** The OPC UA servers' endpoint URLs. */
  opcuaEndpoints: string[];
  /** File with the SecurityAdmin password of the demo servers. */
  securityAdminPasswordFile: string;
  cmms: { port: number; caFile: string; tokenFile: string };
}

export const DEMO_GATEWAY_ID = 'demo-gateway';

/**
 * The agent's configuration for the demo: everything on 127.0.0.1 and on
 * ports the kernel picks (the agent logs them), MQTT devices with an
 * enrollment token approved and the others held for a technician, the demo
 * presses approved for a certificate push and the other servers left to a
 * technician, and the inventory synced to the reference CMMS receiver.
 * Only what differs from the embedded defaults (config/edge-agent.example.yaml).
 */
export function demoConfig(o: DemoConfigInput): string {
  const config = {
    agent: { id: DEMO_GATEWAY_ID, dataDir: o.dataDir },
    http: { host: '127.0.0.1', port: 0 },
    // node-opcua verifies no ECDSA signature in a chain: OPC UA peers need an RSA root (docs/opcua.md).
    ca: { organization: 'Demo Plant', rootKeyType: 'rsa-2048' },
    mqtt: {
      listenHost: '127.0.0.1',
      provisioningPort: 0,
      mtlsPort: 0,
      policy: { rules: [{ kind: 'token', action: 'approve' }], default: 'hold', renewal: 'hold' },
    },
    opcua: {
      endpoints: o.opcuaEndpoints,
      // Discovery runs once the servers trust the agent (run.ts asks for it); then every minute.
      runOnStart: false,
      intervalMs: 60_000,
      push: {
        approve: [{ applicationUri: AUTO_APPROVED_SERVERS }],
        securityAdmins: [{ applicationUri: 'urn:demo-plant:*', username: SECURITY_ADMIN, passwordFile: o.securityAdminPasswordFile }],
        stepTimeoutMs: 10_000,
        applyWaitMs: 20_000,
        retryInitialMs: 5_000,
        retryMaxMs: 60_000,
      },
    },
    sync: {
      enabled: true,
      baseUrl: `https://127.0.0.1:${o.cmms.port}`,
      caFile: o.cmms.caFile,
      tokenFile: o.cmms.tokenFile,
      retryMaxMs: 10_000,
      location: DEMO_LOCATION,
    },
  };
  return `# The demo plant's agent (scripts/demo/run.ts writes it at every run).\n${stringify(config)}`;
}
