import { expect } from 'vitest';
import { runCli } from './daemon.js';

/** A user of the running daemon's API with this role, and a token for it (made through the API with the first admin's token). */
export async function apiUser(config: string, name: string, role: 'admin' | 'technician' | 'viewer'): Promise<string> {
  const added = await runCli(['users', 'add', name, '--role', role, '--config', config]);
  expect(added.code, added.stderr).toBe(0);
  const made = await runCli(['tokens', 'create', '--user', name, '--json', '--config', config]);
  expect(made.code, made.stderr).toBe(0);
  return (JSON.parse(made.stdout) as { secret: string }).secret;
}
