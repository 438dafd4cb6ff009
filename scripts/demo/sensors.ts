import { setTimeout as sleep } from 'node:timers/promises';
import { simulateDevices, type SimulationResult } from '../simulate/mqttDevices.js';
import { SENSOR_GROUPS } from './plant.js';

export interface SensorOptions {
  /** mqtts:// address of the agent's provisioning listener. */
  provisioningUrl: string;
  /** The gateway CA chain (PEM file) the sensors verify the broker with. */
  caFile: string;
  /** The enrollment token the groups with a token present. */
  token: string;
  /** Ends every sensor still waiting (for approval, or to start). */
  signal: AbortSignal;
}

/**
 * The demo's MQTT sensors (the device simulator, in this process): each
 * group starts after its delay, enrolls over the provisioning listener,
 * then says hello over mutual TLS with its new certificate. A sensor without
 * a token waits for a technician's approval for as long as the demo runs.
 */
export function runSensors(o: SensorOptions): Promise<SimulationResult[]> {
  return Promise.all(
    SENSOR_GROUPS.map(async (g) => {
      await sleep(g.afterSeconds * 1000, undefined, { signal: o.signal }).catch(() => {});
      return simulateDevices({
        provisioningUrl: o.provisioningUrl,
        caFile: o.caFile,
        count: g.count,
        concurrency: g.count,
        idPrefix: g.idPrefix,
        manufacturer: g.manufacturer,
        model: g.model,
        ...(g.withToken ? { token: o.token } : {}),
        waitForApproval: true,
        // The longest the simulator allows: a held sensor waits for the newcomer.
        timeoutMs: 3_600_000,
        signal: o.signal,
      });
    }),
  );
}
