import { z } from 'zod';

/** The restart mark of schema.ts (config/diff.ts reads it; schema.ts imports this file, so the mark is set here directly). */
const restart = <T extends z.ZodType>(schema: T): T => schema.meta({ restart: true }) as T;

const int = (min: number, max: number, what: string) => z.number().int().min(min).max(max).describe(`${what} (whole number, ${min} to ${max})`);

/**
 * configuration: how the agent delivers configuration profiles to devices
 * after provisioning (docs/device-configuration.md). The profiles themselves
 * live in the database and are managed with `edge-agent config-profiles`.
 */
export const configurationSchema = z.strictObject({
  // The service is built (or not) at start; MQTT topics and ACLs are made at start.
  enabled: restart(z.boolean().describe('deliver configuration profiles to provisioned devices')),
  /** MQTT: the agent publishes `<topicRoot>/<id>/desired` (retained); the device publishes `<topicRoot>/<id>/reported`. */
  topicRoot: restart(
    z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/, 'one topic level of letters, digits, - and _')
      .describe('first topic level of the configuration topics (config/<device id>/desired and /reported)'),
  ),
  concurrency: int(1, 256, 'deliveries (publishes, OPC UA sessions) under way at once'),
  retryInitialMs: int(100, 3_600_000, 'first wait before a failed delivery is tried again, in milliseconds'),
  retryMaxMs: int(1_000, 86_400_000, 'longest wait between tries of a failed delivery, in milliseconds'),
  opcuaDriftCheckSeconds: int(10, 604_800, 'how often OPC UA servers are read back to find values changed behind the agent, in seconds'),
});

export type ConfigurationConfig = z.infer<typeof configurationSchema>;

export function defaultConfigurationConfig(): ConfigurationConfig {
  return { enabled: true, topicRoot: 'config', concurrency: 16, retryInitialMs: 5_000, retryMaxMs: 3_600_000, opcuaDriftCheckSeconds: 300 };
}
