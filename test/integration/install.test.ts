import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, tempDir } from '../helpers/daemon.js';

const run = promisify(execFile);
/** A run of the install script: measured at 2 to 4 minutes with the machine's two cores busy. */
const INSTALL_MS = 600_000;

describe('scripts/install-systemd.sh (staged with --root)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let unit: string;
  const script = join(REPO, 'scripts/install-systemd.sh');

  beforeAll(async () => {
    tmp = tempDir();
    await run(script, ['--root', tmp.dir, '--prefix', '/opt/edge-agent'], { cwd: REPO });
    unit = readFileSync(join(tmp.dir, 'etc/systemd/system/edge-agent.service'), 'utf8');
    // The script builds, copies node_modules and runs npm prune: minutes on a loaded 2-core CI machine.
  }, INSTALL_MS);
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
    const verify = await run('systemd-analyze', ['verify', join(tmp.dir, 'etc/systemd/system/edge-agent.service')]).catch((e: { stderr: string }) => e);
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

  it("puts the edge-agent command on PATH: a script that runs the installed agent with the unit's Node.js, passing every argument", async () => {
    const command = join(tmp.dir, 'usr/local/bin/edge-agent');
    const text = readFileSync(command, 'utf8');
    expect(statSync(command).mode & 0o777).toBe(0o755);
    expect(text).toMatch(/^#!\/bin\/sh\n/);
    expect(text).toContain(`\nexec '${process.execPath}' '/opt/edge-agent/dist/agent/main.js' "$@"\n`);
    // Run it against the staged tree (it names /opt/edge-agent, which this machine does not have).
    const staged = join(tmp.dir, 'edge-agent-staged');
    writeFileSync(staged, text.replaceAll("'/opt/edge-agent/", `'${tmp.dir}/opt/edge-agent/`), { mode: 0o755 });
    const conf = join(tmp.dir, 'a dir with spaces', 'edge-agent.yaml');
    mkdirSync(join(tmp.dir, 'a dir with spaces'));
    writeFileSync(conf, 'agent:\n  id: on-path\n');
    const { stdout } = await run(staged, ['config', 'check', '--json', '--config', conf]);
    expect(JSON.parse(stdout)).toMatchObject({ valid: true, file: conf, config: { agent: { id: 'on-path' } } });
  });

  it('reads /etc/edge-agent/edge-agent.yaml without --config once installed, even from a directory holding config/edge-agent.yaml', async () => {
    const main = join(tmp.dir, 'opt/edge-agent/dist/agent/main.js');
    const cwd = join(tmp.dir, 'somewhere');
    mkdirSync(join(cwd, 'config'), { recursive: true });
    writeFileSync(join(cwd, 'config/edge-agent.yaml'), 'agent:\n  id: not-the-gateway\n');
    // Valid or not (this machine may have no /etc/edge-agent), the file it read is the system one.
    const checked = await run(process.execPath, [main, 'config', 'check', '--json'], { cwd, env: { PATH: process.env.PATH } }).catch(
      (e: { stdout: string }) => e,
    );
    expect(JSON.parse(checked.stdout)).toMatchObject({ file: '/etc/edge-agent/edge-agent.yaml' });
    const help = await run(process.execPath, [main, 'devices', 'list', '--help']);
    expect(help.stdout.replace(/\s+/g, ' ')).toContain('(default: $EDGE_AGENT_CONFIG, else /etc/edge-agent/edge-agent.yaml)');
    const top = await run(process.execPath, [main, '--help']);
    expect(top.stdout.replace(/\s+/g, ' ')).toContain(
      'Configuration: --config PATH, else $EDGE_AGENT_CONFIG, else /etc/edge-agent/edge-agent.yaml (this edge-agent is installed;',
    );
  });

  it(
    'keeps an edited configuration file on reinstall',
    async () => {
      const conf = join(tmp.dir, 'etc/edge-agent/edge-agent.yaml');
      writeFileSync(conf, 'agent:\n  id: edited-by-engineer\n');
      const { stdout } = await run(script, ['--root', tmp.dir], { cwd: REPO });
      expect(stdout).toContain('keeping the existing');
      expect(readFileSync(conf, 'utf8')).toBe('agent:\n  id: edited-by-engineer\n');
    },
    INSTALL_MS,
  );

  it('refuses unknown arguments with exit 64', async () => {
    const failure = (await run(script, ['--bogus']).catch((e: unknown) => e)) as { code: number; stderr: string };
    expect(failure.code).toBe(64);
    expect(failure.stderr).toContain('unknown argument: --bogus');
  });
});
