import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, tempDir } from '../helpers/daemon.js';

const run = promisify(execFile);

describe('scripts/install-systemd.sh (staged with --root)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let unit: string;
  const script = join(REPO, 'scripts/install-systemd.sh');

  beforeAll(async () => {
    tmp = tempDir();
    await run(script, ['--root', tmp.dir, '--prefix', '/opt/edge-agent'], { cwd: REPO });
    unit = readFileSync(join(tmp.dir, 'etc/systemd/system/edge-agent.service'), 'utf8');
  }, 120_000);
  afterAll(() => tmp.cleanup());

  it('writes a unit that systemd-analyze accepts, with every placeholder filled in', async () => {
    expect(unit).not.toMatch(/@[A-Z]+@/);
    expect(unit).toContain(`ExecStart=${process.execPath} /opt/edge-agent/dist/agent/main.js run --config /etc/edge-agent/edge-agent.yaml`);
    for (const line of [
      'Type=notify',
      'Restart=on-failure',
      'ExecReload=/bin/kill -HUP $MAINPID',
      'User=edge-agent',
      'StateDirectory=edge-agent',
      'ProtectSystem=strict',
      'NoNewPrivileges=yes',
      'PrivateTmp=yes',
      'WatchdogSec=30s',
      'RestartPreventExitStatus=65 78',
    ]) {
      expect(unit).toContain(`\n${line}\n`);
    }
    const verify = await run('systemd-analyze', ['verify', join(tmp.dir, 'etc/systemd/system/edge-agent.service')]).catch(
      (e: { stderr: string }) => e,
    );
    expect(verify.stderr).toBe('');
  });

  it('ships a path unit that reloads Mosquitto when the agent rewrites its ACL, which systemd-analyze accepts', async () => {
    const path = join(REPO, 'config/edge-agent-mosquitto-reload.path');
    const service = join(REPO, 'config/edge-agent-mosquitto-reload.service');
    expect(readFileSync(path, 'utf8')).toContain('\nPathChanged=/etc/mosquitto/edge-agent/acl-devices\n');
    expect(readFileSync(service, 'utf8')).toContain('\nExecStart=/bin/systemctl reload mosquitto.service\n');
    const verify = await run('systemd-analyze', ['verify', path, service]).catch((e: { stderr: string }) => e);
    expect(verify.stderr).toBe('');
  });

  it('installs a runnable agent whose configuration is valid and keeps its data in /var/lib/edge-agent', async () => {
    const main = join(tmp.dir, 'opt/edge-agent/dist/agent/main.js');
    const conf = join(tmp.dir, 'etc/edge-agent/edge-agent.yaml');
    const { stdout } = await run(process.execPath, [main, 'config', 'check', '--config', conf, '--json']);
    const checked = JSON.parse(stdout) as { valid: boolean; config: { agent: { dataDir: string } } };
    expect(checked.valid).toBe(true);
    expect(checked.config.agent.dataDir).toBe('/var/lib/edge-agent');
    const version = await run(process.execPath, [main, 'version']);
    expect(version.stdout).toMatch(/^edge-agent /);
  });

  it('keeps an edited configuration file on reinstall', async () => {
    const conf = join(tmp.dir, 'etc/edge-agent/edge-agent.yaml');
    writeFileSync(conf, 'agent:\n  id: edited-by-engineer\n');
    const { stdout } = await run(script, ['--root', tmp.dir], { cwd: REPO });
    expect(stdout).toContain('keeping the existing');
    expect(readFileSync(conf, 'utf8')).toBe('agent:\n  id: edited-by-engineer\n');
  }, 120_000);

  it('refuses unknown arguments with exit 64', async () => {
    const failure = (await run(script, ['--bogus']).catch((e: unknown) => e)) as { code: number; stderr: string };
    expect(failure.code).toBe(64);
    expect(failure.stderr).toContain('unknown argument: --bogus');
  });
});
