import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { configPath } from '../../agent/cli/common.js';
import { defaultConfigPath, packageRoot, runningFromCheckout, SYSTEM_CONFIG_PATH } from '../../agent/config/location.js';
import { REPO, tempDir } from '../helpers/daemon.js';

describe('which configuration file the commands read', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => tmp.cleanup());

  it('tells a checkout (sources beside dist/) from an installed agent (dist/ only)', () => {
    expect(packageRoot(join(REPO, 'dist', 'agent', 'config'))).toBe(REPO);
    expect(runningFromCheckout(REPO)).toBe(true);
    // Laid out as install-systemd.sh leaves /opt/edge-agent.
    mkdirSync(join(tmp.dir, 'dist', 'agent', 'config'), { recursive: true });
    writeFileSync(join(tmp.dir, 'package.json'), '{}');
    expect(packageRoot(join(tmp.dir, 'dist', 'agent', 'config'))).toBe(tmp.dir);
    expect(runningFromCheckout(tmp.dir)).toBe(false);
  });

  it('takes --config, then a non-empty $EDGE_AGENT_CONFIG, then the default of the installation', () => {
    expect(defaultConfigPath(false)).toBe(SYSTEM_CONFIG_PATH);
    expect(SYSTEM_CONFIG_PATH).toBe('/etc/edge-agent/edge-agent.yaml');
    expect(defaultConfigPath(true)).toBe('config/edge-agent.yaml');
    expect(configPath('a.yaml', { EDGE_AGENT_CONFIG: 'b.yaml' })).toBe('a.yaml');
    expect(configPath(undefined, { EDGE_AGENT_CONFIG: 'b.yaml' })).toBe('b.yaml');
    // The tests run from the checkout.
    expect(configPath(undefined, {})).toBe('config/edge-agent.yaml');
    expect(configPath(undefined, { EDGE_AGENT_CONFIG: '' })).toBe('config/edge-agent.yaml');
  });
});
