import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { latestVersion } from '../../agent/store/migrate.js';
import { MIGRATIONS } from '../../agent/store/migrations/index.js';
import { Daemon, runCli, tempDir } from '../helpers/daemon.js';

describe('the edge-agent command', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => tmp.cleanup());

  it('exits 78 on an invalid configuration, lists every problem at once, and writes nothing', async () => {
    const file = join(tmp.dir, 'bad.yaml');
    writeFileSync(
      file,
      [
        'agent:',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        '  heartbeatIntervalMs: 5',
        'store:',
        '  busyTimeotMs: 100',
        'http:',
        '  port: "eighty"',
        'log:',
        '  level: chatty',
        'cmms: {}',
        '',
      ].join('\n'),
    );
    const d = Daemon.start(file);
    const exit = await d.exited;
    expect(exit.code).toBe(78);
    const err = d.stderr;
    expect(err).toContain(`configuration ${file} has 5 problems`);
    expect(err).toContain('agent.heartbeatIntervalMs (line 3): must be at least 100');
    expect(err).toContain('store.busyTimeotMs (line 5): unknown key');
    expect(err).toContain('did you mean "busyTimeoutMs"?');
    expect(err).toContain('http.port (line 7): expected number, got string');
    expect(err).toContain('log.level (line 9): must be one of: fatal, error, warn, info, debug, trace');
    expect(err).toContain('cmms (line 10): unknown key');
    expect(existsSync(join(tmp.dir, 'data'))).toBe(false);
    expect(d.logs).toEqual([]);
  });

  it('exits 78, naming the rule, when a manufacturer CA file of the enrollment policy cannot be used', async () => {
    const file = join(tmp.dir, 'claim.yaml');
    const missing = join(tmp.dir, 'no-such-ca.pem');
    writeFileSync(
      file,
      `agent:\n  dataDir: ${join(tmp.dir, 'claim-data')}\nhttp:\n  port: 0\n` +
        'mqtt:\n  policy:\n    rules:\n      - { kind: token, action: approve }\n' +
        `      - { kind: claim, manufacturerCaFile: ${missing}, action: approve }\n`,
    );
    const d = Daemon.start(file);
    try {
      expect((await d.exited).code).toBe(78);
      expect(d.stderr).toContain(`mqtt.policy.rules.1.manufacturerCaFile: manufacturer CA file ${missing} cannot be read`);
    } finally {
      await d.dispose();
    }
  });

  it('refuses an OPC UA discovery when discovery is off, with exit 1 and the reason', async () => {
    const file = join(tmp.dir, 'opcua-off.yaml');
    writeFileSync(file, `agent:\n  dataDir: ${join(tmp.dir, 'off-data')}\nopcua:\n  enabled: false\n`);
    const result = await runCli(['opcua', 'discover', '--config', file]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('REFUSED: OPC UA discovery is off (opcua.enabled: false)');
  });

  it('exits 78 when the configuration file is missing, with a hint', async () => {
    const result = await runCli(['run', '--config', join(tmp.dir, 'nope.yaml')]);
    expect(result.code).toBe(78);
    expect(result.stderr).toContain('nope.yaml: file not found');
    expect(result.stderr).toContain('hint: copy config/edge-agent.example.yaml');
  });

  it('takes the configuration path from EDGE_AGENT_CONFIG when --config is absent', async () => {
    const result = await runCli(['config', 'check', '--json'], { env: { EDGE_AGENT_CONFIG: join(tmp.dir, 'absent.yaml') } });
    expect(result.code).toBe(78);
    expect(JSON.parse(result.stdout)).toMatchObject({ valid: false, file: join(tmp.dir, 'absent.yaml') });
  });

  it('config check prints the effective configuration with environment overrides applied', async () => {
    const file = join(tmp.dir, 'ok.yaml');
    writeFileSync(file, 'agent:\n  id: press-7\n  dataDir: ./state\n');
    const result = await runCli(['config', 'check', '--config', file, '--json'], {
      cwd: tmp.dir,
      env: { EDGE_AGENT_LOG_LEVEL: 'debug', EDGE_AGENT_HTTP_PORT: '9100', EDGE_AGENT_CA_PASSPHRASE: 'hunter2-on-the-plant-floor' },
    });
    expect(result.code).toBe(0);
    expect(result.stdout).not.toContain('hunter2-on-the-plant-floor');
    const out = JSON.parse(result.stdout) as { valid: boolean; config: Record<string, Record<string, unknown>> };
    expect(out.config.ca!.passphrase).toBe('***');
    expect(out.valid).toBe(true);
    expect(out.config.agent).toMatchObject({ id: 'press-7', dataDir: join(tmp.dir, 'state') });
    expect(out.config.store!.path).toBe(join(tmp.dir, 'state', 'edge-agent.db'));
    expect(out.config.log!.level).toBe('debug');
    expect(out.config.http!.port).toBe(9100);
    expect(existsSync(join(tmp.dir, 'state'))).toBe(false);

    const text = await runCli(['config', 'check', '--config', file], { cwd: tmp.dir });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('id: press-7');
  });

  it('names a bad environment override by its variable', async () => {
    const file = join(tmp.dir, 'ok.yaml');
    writeFileSync(file, 'agent:\n  dataDir: ./state\n');
    const result = await runCli(['config', 'check', '--config', file], {
      env: { EDGE_AGENT_HTTP_PORT: '70000', EDGE_AGENT_STORE_PAHT: '/x', EDGE_AGENT_LOG_PRETTY: 'maybe' },
    });
    expect(result.code).toBe(78);
    expect(result.stderr).toContain('env EDGE_AGENT_HTTP_PORT (http.port): must be at most 65535');
    expect(result.stderr).toContain('env EDGE_AGENT_STORE_PAHT: unknown environment override');
    expect(result.stderr).toContain('env EDGE_AGENT_LOG_PRETTY: "maybe" is not a boolean');
  });

  it('has --help on every command, and exits 64 on an unknown command or option', async () => {
    const ca = ['init', 'status', 'passphrase', 'issue', 'revoke', 'crl', 'list', 'request-intermediate', 'import-intermediate'].map((c) => [
      'ca',
      c,
      '--help',
    ]);
    for (const args of [
      ['--help'],
      ['run', '--help'],
      ['config', '--help'],
      ['config', 'check', '--help'],
      ['backup', '--help'],
      ['version', '--help'],
      ['ca', '--help'],
      ['broker', '--help'],
      ['broker', 'mosquitto-config', '--help'],
      ['login', '--help'],
      ['logout', '--help'],
      ['whoami', '--help'],
      ...ca,
    ]) {
      const result = await runCli(args);
      expect(result.code, args.join(' ')).toBe(0);
      expect(result.stdout, args.join(' ')).toMatch(/^Usage: edge-agent/);
    }
    expect((await runCli(['frobnicate'])).code).toBe(64);
    const badOption = await runCli(['run', '--no-such-flag']);
    expect(badOption.code).toBe(64);
    expect(badOption.stderr).toContain("unknown option '--no-such-flag'");
    expect((await runCli(['backup'])).code).toBe(64);
    // The password is never an option: anyone on the machine could read it in the process list.
    const password = await runCli(['login', '--password', 'x']);
    expect(password.code).toBe(64);
    expect(password.stderr).toContain("unknown option '--password'");
    // Help text is wrapped to the terminal's width.
    expect((await runCli(['login', '--help'])).stdout.replace(/\s+/g, ' ')).toContain('default: the login name of the OS user');
  });

  it('ca init creates the CA once and refuses to overwrite it', async () => {
    const file = join(tmp.dir, 'ca.yaml');
    writeFileSync(file, `agent:\n  id: gw-init\n  dataDir: ${join(tmp.dir, 'data')}\n`);
    const first = await runCli(['ca', 'init', '--config', file, '--json']);
    expect(first.code, first.stderr).toBe(0);
    const roles = (JSON.parse(first.stdout) as { role: string; keyType: string }[]).map((c) => [c.role, c.keyType]);
    expect(roles).toEqual([
      ['root', 'EC P-256'],
      ['issuing-ec', 'EC P-256'],
      ['issuing-rsa', 'RSA 2048'],
    ]);
    const again = await runCli(['ca', 'init', '--config', file]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('CA_ALREADY_INITIALISED');
    const badUsage = await runCli(['ca', 'issue', '--profile', 'mqtt-device', '--id', 'x', '--config', file]);
    expect(badUsage.code).toBe(64);
    expect(badUsage.stderr).toContain('give exactly one of --csr FILE and --generate-key');
  });

  it('prints its version as text and as JSON', async () => {
    const text = await runCli(['version']);
    expect(text.code).toBe(0);
    const latest = latestVersion(MIGRATIONS);
    expect(text.stdout).toMatch(new RegExp(`^edge-agent \\d+\\.\\d+\\.\\d+ \\(node \\d+\\.\\d+\\.\\d+, sqlite 3\\.\\d+\\.\\d+, schema ${latest}\\)\\n$`));
    const json = JSON.parse((await runCli(['version', '--json'])).stdout) as Record<string, unknown>;
    expect(json).toMatchObject({ name: 'edge-agent', schemaVersion: latest, node: process.versions.node });
  });

  it('fails at start with a message naming the cause when the port is taken, and exits 1', async () => {
    const first = Daemon.start(writeFile(tmp.dir, 'a', 0));
    let second: Daemon | undefined;
    try {
      const base = await first.ready();
      const port = new URL(base).port;
      second = Daemon.start(writeFile(tmp.dir, 'b', Number(port)));
      const exit = await second.exited;
      expect(exit.code).toBe(1);
      expect(second.stderr).toContain(`could not start: http failed to start: cannot listen on 127.0.0.1:${port}`);
      expect(second.stderr).toContain('is already in use');
      // What had started (lock, store, runs, ca, report, mqtt, opcua, configuration, sessions) was stopped again, in reverse: the run is closed cleanly.
      const stopped = second.logs.filter((l) => l.msg === 'service stopped').map((l) => l.service);
      expect(stopped).toEqual(['http', 'sessions', 'configuration', 'opcua', 'mqtt', 'report', 'ca', 'runs', 'store', 'lock']);
      first.kill('SIGTERM');
      expect((await first.exited).code).toBe(0);
    } finally {
      // A failed expectation must not leave a daemon running after the test.
      await first.dispose();
      await second?.dispose();
    }
  });
});

function writeFile(dir: string, name: string, port: number): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, `agent:\n  dataDir: ${join(dir, name)}\nhttp:\n  port: ${port}\n`);
  return file;
}
