import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { ConfiguredDevice, Desired } from '../../scripts/simulate/configDevice.js';
import { runCli } from './daemon.js';
import { pollUntil } from './waiters.js';

/** A device's configuration as GET /api/v1/devices/{id} shows it. */
export interface ShownConfiguration {
  profile: string | null;
  version: number | null;
  status: string;
  error: string | null;
  reportedVersion: number | null;
  reportedAt: string | null;
}

/** A profile document for the simulated devices (model SIM-1), version by version. */
export function profileFile(dir: string, name: string, values: Record<string, number | string>, extra: Record<string, unknown> = {}): string {
  const file = join(dir, `${name}-${Object.values(values).join('-')}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      protocol: 'mqtt',
      selector: { model: 'SIM-1' },
      schema: { alertThreshold: { type: 'number', minimum: 0 }, mode: { type: 'string', enum: ['peak', 'rms'] } },
      values,
      ...extra,
    }),
  );
  return file;
}

/** `edge-agent config-profiles ARGS --config CONFIG`, which must succeed; its JSON answer. */
export async function configProfiles(config: string, ...args: string[]): Promise<Record<string, unknown>> {
  const r = await runCli(['config-profiles', ...args, '--json', '--config', config]);
  expect(r.code, `config-profiles ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** Reads the device's configuration through the API until `want` holds (a deadline, not a fixed wait). */
export async function configurationUntil(
  base: string,
  token: string,
  deviceId: string,
  want: (c: ShownConfiguration) => boolean,
  timeoutMs = 20_000,
): Promise<ShownConfiguration> {
  let last: unknown;
  return pollUntil(
    async () => {
      const res = await fetch(`${base}/api/v1/devices/${encodeURIComponent(deviceId)}`, { headers: { authorization: `Bearer ${token}` } });
      const body = (await res.json()) as { configuration?: ShownConfiguration };
      last = body.configuration ?? body;
      return body.configuration && want(body.configuration) ? body.configuration : undefined;
    },
    { timeoutMs, intervalMs: 100, message: () => `${deviceId}: configuration never as wanted; last ${JSON.stringify(last)}` },
  );
}

/** The value of `edge_agent_device_config{status}` in /metrics. */
export async function configGauge(base: string, status: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`edge_agent_device_config{status="${status}"}`));
  return line === undefined ? Number.NaN : Number(line.split(' ').pop());
}

/** How many times the simulated device applied this version of the profile. */
export const applications = (device: ConfiguredDevice, profile: string, version: number): number =>
  device.applied.filter((d: Desired) => d.profile === profile && d.version === version).length;

/** Waits until the simulated device has handled a desired message matching `match` (deadline: `timeoutMs`). */
export function handled(device: ConfiguredDevice, match: (e: ConfiguredDevice['events'][number]) => boolean, from = 0, timeoutMs = 20_000): Promise<unknown> {
  return pollUntil(() => device.events.slice(from).find(match), {
    timeoutMs,
    intervalMs: 50,
    message: () => `${device.id} never handled it; events ${JSON.stringify(device.events)}`,
  });
}
