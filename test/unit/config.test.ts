import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { planReload, RESTART_ONLY_KEYS } from '../../agent/config/diff.js';
import { maskSecrets } from '../../agent/secrets.js';
import { environmentVariables } from '../../agent/config/env.js';
import { loadConfig } from '../../agent/config/load.js';
import { configSchema, defaultAgentId, defaultConfig } from '../../agent/config/schema.js';
import { ConfigError } from '../../agent/errors.js';
import { REPO, tempDir } from '../helpers/daemon.js';

describe('loadConfig', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => tmp.cleanup());

  const load = (yaml: string, env: NodeJS.ProcessEnv = {}) => {
    const file = join(tmp.dir, 'c.yaml');
    writeFileSync(file, yaml);
    return loadConfig({ file, env, cwd: tmp.dir });
  };
  const problems = (yaml: string, env: NodeJS.ProcessEnv = {}) => {
    try {
      load(yaml, env);
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
    throw new Error('expected a ConfigError');
  };

  it('fills every key from the embedded defaults for an empty file', () => {
    const { config } = load('');
    const defaults = defaultConfig();
    expect(config.http).toEqual(defaults.http);
    expect(config.agent.dataDir).toBe(join(tmp.dir, 'data'));
    expect(config.store.path).toBe(join(tmp.dir, 'data', 'edge-agent.db'));
  });

  it('resolves a relative store path from the working directory and keeps an absolute one', () => {
    expect(load('store:\n  path: db/x.db\n').config.store.path).toBe(join(tmp.dir, 'db/x.db'));
    expect(load('store:\n  path: /var/lib/x.db\n').config.store.path).toBe('/var/lib/x.db');
  });

  it('lets the environment override the file, converting to the key type', () => {
    const { config } = load('http:\n  port: 1000\n', {
      EDGE_AGENT_HTTP_PORT: '2000',
      EDGE_AGENT_LOG_PRETTY: 'yes',
      EDGE_AGENT_AGENT_DATA_DIR: '/srv/edge',
      EDGE_AGENT_CONFIG: 'ignored: it names the file, not a key',
    });
    expect(config.http.port).toBe(2000);
    expect(config.log.pretty).toBe(true);
    expect(config.agent.dataDir).toBe('/srv/edge');
  });

  const cases: { name: string; yaml: string; env?: NodeJS.ProcessEnv; expected: { path: string; message: RegExp; line?: number; hint?: RegExp }[] }[] = [
    {
      name: 'an unknown top-level section, with the allowed ones as hint',
      yaml: 'agent: {}\ncmms:\n  url: x\n',
      expected: [
        {
          path: 'cmms',
          message: /^unknown key$/,
          line: 2,
          hint: /allowed here: agent, log, store, http, auth, ca, mqtt, opcua, sync, configuration, report, lifecycle/,
        },
      ],
    },
    {
      name: 'a misspelt key, with a suggestion',
      yaml: 'log:\n  levle: debug\n',
      expected: [{ path: 'log.levle', message: /^unknown key$/, line: 2, hint: /did you mean "level"\?/ }],
    },
    {
      name: 'a string where a number belongs',
      yaml: 'store:\n  busyTimeoutMs: soon\n',
      expected: [{ path: 'store.busyTimeoutMs', message: /^expected number, got string$/, line: 2, hint: /0 to 600000/ }],
    },
    {
      name: 'a fraction where a whole number belongs',
      yaml: 'http:\n  port: 80.5\n',
      expected: [{ path: 'http.port', message: /^expected a whole number/, line: 2 }],
    },
    {
      name: 'a value out of range',
      yaml: 'lifecycle:\n  stopTimeoutMs: 10\n',
      expected: [{ path: 'lifecycle.stopTimeoutMs', message: /^must be at least 100$/, line: 2 }],
    },
    {
      name: 'a value not in the list',
      yaml: 'store:\n  integrityCheck: sometimes\n',
      expected: [{ path: 'store.integrityCheck', message: /^must be one of: quick, full, off$/, line: 2 }],
    },
    {
      name: 'a gateway id with forbidden characters',
      yaml: 'agent:\n  id: "line 3/gw"\n',
      expected: [{ path: 'agent.id', message: /not allowed/, line: 2, hint: /A-Z a-z 0-9/ }],
    },
    {
      name: 'a section that is not a mapping',
      yaml: 'http: 8080\n',
      expected: [{ path: 'http', message: /^expected a mapping, got number$/, line: 1 }],
    },
    {
      name: 'a listener on the network without TLS, telling to enable it',
      yaml: 'http:\n  host: 0.0.0.0\n',
      expected: [{ path: 'http.host', message: /not a loopback address.*set http\.tls\.enabled: true/, line: 2 }],
    },
    {
      name: 'a listener on the network without TLS, set from the environment',
      yaml: '',
      env: { EDGE_AGENT_HTTP_HOST: '10.20.0.5' },
      expected: [{ path: 'env EDGE_AGENT_HTTP_HOST (http.host)', message: /http\.tls\.enabled: true/ }],
    },
    {
      name: 'a TLS certificate without its key',
      yaml: 'http:\n  tls:\n    enabled: true\n    certFile: gw.pem\n',
      expected: [{ path: 'http.tls.keyFile', message: /certFile and http\.tls\.keyFile go together/ }],
    },
    {
      name: 'http.names entries that are neither a DNS name nor an IP address',
      yaml: 'http:\n  names: [gw3.plant.example, gw_3, "fe80::1%eth0", "::ffff:10.0.0.1", 10.20.0.5]\n',
      expected: [
        { path: 'http.names.1', message: /DNS name or an IP address/, line: 2 },
        { path: 'http.names.2', message: /DNS name or an IP address/ },
        { path: 'http.names.3', message: /DNS name or an IP address/ },
      ],
    },
    {
      name: 'an environment override of the wrong type, named by its variable',
      yaml: '',
      env: { EDGE_AGENT_STORE_BUSY_TIMEOUT_MS: 'never' },
      expected: [{ path: 'env EDGE_AGENT_STORE_BUSY_TIMEOUT_MS', message: /"never" is not a number/ }],
    },
  ];
  for (const c of cases) {
    it(`reports ${c.name}`, () => {
      const found = problems(c.yaml, c.env);
      expect(found).toHaveLength(c.expected.length);
      c.expected.forEach((e, i) => {
        const p = found[i]!;
        expect(p.path).toBe(e.path);
        expect(p.message).toMatch(e.message);
        if (e.line !== undefined) expect(p.line).toBe(e.line);
        if (e.hint) expect(p.hint).toMatch(e.hint);
      });
    });
  }

  it('accepts plain HTTP on loopback addresses only, and any address with TLS', () => {
    for (const host of ['127.0.0.1', '127.10.0.5', '::1', '0:0:0:0:0:0:0:1', 'localhost', 'LOCALHOST']) {
      expect(load(`http:\n  host: "${host}"\n`).config.http.host, host).toBe(host);
    }
    for (const host of ['0.0.0.0', '::', '10.20.0.5', '128.0.0.1', '::ffff:127.0.0.1', 'gw3.plant.example', 'localhost.example']) {
      expect(
        problems(`http:\n  host: "${host}"\n`).map((p) => p.path),
        host,
      ).toEqual(['http.host']);
      expect(load(`http:\n  host: "${host}"\n  tls:\n    enabled: true\n`).config.http.tls.enabled, host).toBe(true);
    }
  });

  it('resolves http.tls.certFile and keyFile from the working directory', () => {
    const { tls } = load('http:\n  tls:\n    enabled: true\n    certFile: tls/gw.pem\n    keyFile: /etc/gw.key\n').config.http;
    expect(tls).toMatchObject({ enabled: true, certFile: join(tmp.dir, 'tls/gw.pem'), keyFile: '/etc/gw.key' });
  });

  it('takes only AEAD cipher suites with forward secrecy, at least one for TLS 1.2, and a request timeout no shorter than the header timeout', () => {
    expect(load('http:\n  tls:\n    ciphers: [ECDHE-ECDSA-CHACHA20-POLY1305, TLS_AES_128_GCM_SHA256]\n').config.http.tls.ciphers).toEqual([
      'ECDHE-ECDSA-CHACHA20-POLY1305',
      'TLS_AES_128_GCM_SHA256',
    ]);
    for (const weak of [
      'ECDHE-ECDSA-AES128-SHA',
      'ECDHE-RSA-AES256-SHA384',
      'AES128-GCM-SHA256',
      'DHE-RSA-AES128-GCM-SHA256',
      'ECDHE-ECDSA-AES128-CCM8',
      'ECDHE-ECDSA-ARIA128-GCM-SHA256',
      'HIGH',
    ]) {
      expect(
        problems(`http:\n  tls:\n    ciphers: [${weak}]\n`).map((p) => p.path),
        weak,
      ).toContain('http.tls.ciphers.0');
    }
    expect(problems('http:\n  tls:\n    ciphers: [TLS_AES_128_GCM_SHA256]\n').map((p) => `${p.path}: ${p.message}`)).toEqual([
      expect.stringMatching(/^http\.tls\.ciphers: needs at least one TLS 1\.2 suite/),
    ]);
    expect(problems('http:\n  headersTimeoutMs: 20000\n  requestTimeoutMs: 10000\n').map((p) => `${p.path}: ${p.message}`)).toEqual([
      'http.requestTimeoutMs: must be at least http.headersTimeoutMs',
    ]);
  });

  it('reports every problem of a file at once', () => {
    const found = problems('agent:\n  heartbeatIntervalMs: 0\nlog:\n  level: loud\n  extra: 1\nhttp:\n  port: -1\n', {
      EDGE_AGENT_NOPE_KEY: '1',
    });
    expect(found.map((p) => p.path).sort()).toEqual(['agent.heartbeatIntervalMs', 'env EDGE_AGENT_NOPE_KEY', 'http.port', 'log.extra', 'log.level'].sort());
  });

  it('reports YAML syntax errors with their line, and duplicate keys', () => {
    const syntax = problems('log:\n  level: info\n   pretty: [\n');
    expect(syntax[0]!.path).toBe('(YAML syntax)');
    expect(syntax[0]!.line).toBeGreaterThan(1);
    const duplicate = problems('log:\n  level: info\n  level: debug\n');
    expect(duplicate[0]!.message).toMatch(/unique/i);
  });

  it('reports YAML syntax errors and bad environment overrides together', () => {
    const found = problems('log:\n  level: info\n  level: debug\n', { EDGE_AGENT_FOO: '1' });
    expect(found.map((p) => p.path)).toEqual(['(YAML syntax)', 'env EDGE_AGENT_FOO']);
  });

  it('reads a section whose keys are all commented out as its defaults', () => {
    const { config } = load('agent:\n  # id: x\nlog:\n');
    expect(config.agent.heartbeatIntervalMs).toBe(defaultConfig().agent.heartbeatIntervalMs);
    expect(config.log.level).toBe('info');
  });

  it('reports a missing file as a problem, not a crash', () => {
    expect(() => loadConfig({ file: join(tmp.dir, 'none.yaml'), env: {} })).toThrow(ConfigError);
  });
});

describe('shipped configuration files', () => {
  it('config/edge-agent.yaml and the example are valid; the example sets every key to its default', () => {
    const env = {};
    const shipped = loadConfig({ file: 'config/edge-agent.yaml', env, cwd: REPO }).config;
    expect(shipped.http.host).toBe('127.0.0.1');
    expect(shipped.agent.dataDir).toBe(join(REPO, 'data'));
    const example = loadConfig({ file: 'config/edge-agent.example.yaml', env, cwd: REPO }).config;
    const defaults = loadConfig({ file: '/dev/null', env, cwd: REPO }).config;
    expect(example).toEqual(defaults);
  });

  it('the example file and docs/configuration.md mention every key and every environment variable', () => {
    const example = readFileSync(join(REPO, 'config/edge-agent.example.yaml'), 'utf8');
    const docs = readFileSync(join(REPO, 'docs/configuration.md'), 'utf8');
    for (const [section, schema] of Object.entries(configSchema.shape)) {
      for (const key of Object.keys(schema.shape)) {
        expect(example, `${section}.${key} in the example`).toMatch(new RegExp(`^\\s+#? ?${key}:`, 'm'));
        expect(docs, `${section}.${key} in docs`).toContain(`\`${section}.${key}\``);
      }
    }
    for (const name of environmentVariables().keys()) expect(docs, name).toContain(name);
  });
});

describe('defaultAgentId', () => {
  it('turns a host name into a valid id', () => {
    expect(defaultAgentId('plant-1.example')).toBe('plant-1.example');
    expect(defaultAgentId('weird host/name')).toBe('weird-host-name');
    expect(defaultAgentId('')).toBe('edge-gateway');
  });
});

describe('planReload', () => {
  it('separates live-changeable keys from restart-only ones', () => {
    const a = defaultConfig();
    const b = { ...a, log: { ...a.log, level: 'debug' as const }, store: { ...a.store, path: '/elsewhere.db' } };
    expect(planReload(a, b)).toEqual({ changed: ['log.level', 'store.path'], restartOnly: ['store.path'] });
    expect(planReload(a, structuredClone(a))).toEqual({ changed: [], restartOnly: [] });
    const ca = {
      ...a,
      ca: { ...a.ca, validityDays: { ...a.ca.validityDays, mqttDevice: 90 }, crlValidityHours: 24, passphraseFile: '/etc/edge-agent/pass' },
    };
    expect(planReload(a, ca)).toEqual({
      changed: ['ca.passphraseFile', 'ca.validityDays.mqttDevice', 'ca.crlValidityHours'],
      restartOnly: ['ca.passphraseFile'],
    });
  });

  it('docs/configuration.md says restart for exactly the keys the schema marks restart-only', () => {
    const docs = readFileSync(join(REPO, 'docs/configuration.md'), 'utf8');
    const rows = [...docs.matchAll(/^\| `([^`]+)` \|[^|]*\| (live|restart) \|/gm)].map((m) => [m[1]!, m[2]!] as const);
    expect(rows.length).toBeGreaterThan(50);
    for (const [key, column] of rows) {
      const marked = RESTART_ONLY_KEYS.some((p) => key === p || key.startsWith(`${p}.`));
      expect(column, key).toBe(marked ? 'restart' : 'live');
    }
  });
});

describe('maskSecrets', () => {
  it('masks values under secret-looking keys at any depth and leaves the rest', () => {
    const input = { upstream: { token: 'abc', url: 'https://x' }, ca: { keyPassphrase: 'p', password: '' }, list: [{ apiKey: 'k' }] };
    expect(maskSecrets(input)).toEqual({
      upstream: { token: '***', url: 'https://x' },
      ca: { keyPassphrase: '***', password: '' },
      list: [{ apiKey: '***' }],
    });
    expect(input.upstream.token).toBe('abc');
  });
});

describe('the configuration of the Docker image', () => {
  it('is valid with the environment the Dockerfile sets, and serves the API over TLS since it binds 0.0.0.0', () => {
    const dockerfile = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
    const env = Object.fromEntries([...dockerfile.matchAll(/(EDGE_AGENT_[A-Z_]+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]));
    expect(dockerfile).toContain('"--config", "config/edge-agent.docker.yaml"');
    const { config } = loadConfig({ file: join(REPO, 'config', 'edge-agent.docker.yaml'), env });
    expect(config.http).toMatchObject({ host: '0.0.0.0', tls: { enabled: true } });
    expect(config.agent.dataDir).toBe('/var/lib/edge-agent');
  });
});
