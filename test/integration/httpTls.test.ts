import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { apiEndpoint } from '../../agent/api/listener.js';
import { loadConfig } from '../../agent/config/load.js';
import { Daemon, runCli, tempDir, writeConfig } from '../helpers/daemon.js';
import { openssl } from '../helpers/openssl.js';

/** A test configuration with these lines in its http section. */
const config = (dir: string, http: string[]) =>
  writeConfig(dir, ['agent:', '  id: test-gw', `  dataDir: ${join(dir, 'data')}`, '  heartbeatIntervalMs: 200', 'http:', ...http, ''].join('\n'));

/** GET over http or https; rejects on a connection or TLS failure. */
function get(url: string, ca?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const send = url.startsWith('https:') ? httpsRequest : httpRequest;
    const req = send(url, { ...(ca === undefined ? {} : { ca }), timeout: 5_000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** The certificate the listener presents, as PEM (the handshake trusts nothing, so any certificate is seen). */
function servedCertificate(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false }, () => {
      const cert = new X509Certificate(socket.getPeerCertificate().raw);
      socket.end();
      resolve(cert.toString());
    });
    socket.on('error', reject);
  });
}

/** The daemon's exit code, or a text saying it started instead of refusing (no clock: a loaded machine starts slowly). */
function exitCode(daemon: Daemon): Promise<number | null | string> {
  const started = daemon
    .waitForLog((l) => l.msg === 'edge-agent ready', 60_000)
    .then(
      () => 'started instead of refusing',
      () => new Promise<string>(() => {}),
    );
  return Promise.race([daemon.exited.then((e) => e.code), started]);
}

/** `openssl s_client` with these options (stdin at its end, so it exits after the handshake): whether the handshake succeeded, and its output. */
function sClient(port: number, options: string[]): Promise<{ ok: boolean; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', ...options], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ ok: code === 0 && /Cipher is (?!\(NONE\))/.test(output), output }));
  });
}

/** Sends raw bytes on a plain TCP connection; resolves with all the server sent back before it closed. */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host: '127.0.0.1', port }, () => socket.write(text));
    let answer = '';
    socket.on('data', (d: Buffer) => (answer += d.toString()));
    socket.on('close', () => resolve(answer));
    socket.on('error', reject);
  });
}

async function listeningPort(daemon: Daemon): Promise<{ port: number; scheme: unknown }> {
  await daemon.waitForLog((l) => l.msg === 'edge-agent ready');
  const line = await daemon.waitForLog((l) => l.msg === 'http listening');
  return { port: Number(line.port), scheme: line.scheme };
}

async function stop(daemon: Daemon): Promise<void> {
  daemon.kill('SIGTERM');
  expect((await daemon.exited).code).toBe(0);
}

describe('TLS on the local listener', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon | undefined;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(async () => {
    await daemon?.dispose();
    daemon = undefined;
    tmp.cleanup();
  });

  it('refuses to start on a non-loopback address without TLS: exit 78, naming http.tls.enabled, nothing bound', async () => {
    daemon = Daemon.start(config(tmp.dir, ['  host: 0.0.0.0', '  port: 0']));
    expect(await exitCode(daemon)).toBe(78);
    expect(daemon.stderr).toMatch(/http\.host.*not a loopback address.*set http\.tls\.enabled: true/s);
    // Refused while reading the configuration: no service ran, no data directory was made.
    expect(daemon.logs.filter((l) => l.msg === 'http listening')).toEqual([]);
    expect(existsSync(join(tmp.dir, 'data'))).toBe(false);
  });

  it('refuses http.tls.certFile without keyFile with exit 78', async () => {
    daemon = Daemon.start(config(tmp.dir, ['  port: 0', '  tls:', '    enabled: true', `    certFile: ${join(tmp.dir, 'gw.pem')}`]));
    expect(await exitCode(daemon)).toBe(78);
    expect(daemon.stderr).toMatch(/http\.tls\.keyFile: http\.tls\.certFile and http\.tls\.keyFile go together/);
    expect(existsSync(join(tmp.dir, 'data'))).toBe(false);
  });

  it('serves HTTPS with a gateway-CA certificate naming localhost, 127.0.0.1 and http.names, kept across restarts', async () => {
    const file = config(tmp.dir, ['  host: 127.0.0.1', '  port: 0', '  names: [gw3.plant.example, 10.20.0.5]', '  tls:', '    enabled: true']);
    daemon = Daemon.start(file);
    const { port, scheme } = await listeningPort(daemon);
    expect(scheme).toBe('https');

    const endpoint = apiEndpoint(loadConfig({ file, env: {} }).config);
    expect(endpoint.url).toBe('https://127.0.0.1:0');
    const url = `https://127.0.0.1:${port}`;
    const chain = endpoint.ca!;
    expect(chain).toMatch(/BEGIN CERTIFICATE/);

    // Trusting the gateway CA chain only: it works, and the chain read from disk is the one the daemon serves.
    const health = await get(`${url}/healthz`, chain);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ status: 'ok' });
    expect((await get(`${url}/ca/chain`, chain)).body).toBe(chain);
    // Without the chain the certificate is not trusted; plain HTTP on the port is told to use HTTPS.
    await expect(get(`${url}/healthz`)).rejects.toThrow(/self[- ]signed|unable to (get|verify)/i);
    const plain = await get(`http://127.0.0.1:${port}/healthz`);
    expect(plain.status).toBe(400);
    expect(JSON.parse(plain.body)).toEqual({
      code: 'HTTPS_REQUIRED',
      message: expect.stringContaining(`this listener speaks HTTPS only: use https://127.0.0.1:${port}/healthz`),
    });
    await expect(get(`https://localhost:${port}/healthz`, chain)).resolves.toMatchObject({ status: 200 });

    const served = await servedCertificate(port);
    const leaf = new X509Certificate(served);
    const sans = (leaf.subjectAltName ?? '').split(', ');
    expect(sans).toEqual(expect.arrayContaining(['DNS:localhost', 'IP Address:127.0.0.1', 'DNS:gw3.plant.example', 'IP Address:10.20.0.5']));
    expect(leaf.subject).toMatch(/CN=test-gw-http/);
    expect(readFileSync(join(tmp.dir, 'data/identity/http-server.crt'), 'utf8')).toContain(served);

    // openssl, independently: a TLS server certificate for these names, chaining to the gateway CA.
    writeFileSync(join(tmp.dir, 'chain.pem'), chain);
    writeFileSync(join(tmp.dir, 'served.pem'), served);
    for (const name of [
      ['-verify_hostname', 'localhost'],
      ['-verify_ip', '127.0.0.1'],
      ['-verify_hostname', 'gw3.plant.example'],
    ]) {
      const verified = await openssl(['verify', '-CAfile', 'chain.pem', '-purpose', 'sslserver', ...name, 'served.pem'], tmp.dir);
      expect(verified.stdout + verified.stderr, name.join(' ')).toMatch(/served\.pem: OK/);
      expect(verified.ok).toBe(true);
    }
    const wrongName = await openssl(['verify', '-CAfile', 'chain.pem', '-purpose', 'sslserver', '-verify_hostname', 'other.example', 'served.pem'], tmp.dir);
    expect(wrongName.ok).toBe(false);

    // The console's cookie is Secure over TLS (a browser never sends it in clear text), under the __Host- name no other service can set.
    const token = readFileSync(join(tmp.dir, 'data/admin.token'), 'utf8').trim();
    const setCookie = await new Promise<string>((resolve, reject) => {
      const body = JSON.stringify({ token });
      const req = httpsRequest(
        `${url}/api/v1/console/session`,
        { method: 'POST', ca: chain, headers: { 'content-type': 'application/json', 'content-length': String(body.length) } },
        (res) => {
          res.resume();
          res.on('end', () => resolve(String(res.headers['set-cookie'])));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    expect(setCookie).toMatch(/^__Host-edge_console=ecs_[\w-]{43}; Path=\/; HttpOnly; SameSite=Strict; Secure; Max-Age=\d+$/);

    // A restart reuses the certificate, and leaves the embedded broker's (another identity) alone.
    const brokerCert = readFileSync(join(tmp.dir, 'data/mqtt/broker-server.crt'), 'utf8');
    await stop(daemon);
    daemon = Daemon.start(file);
    const again = await listeningPort(daemon);
    expect(await servedCertificate(again.port)).toBe(served);
    expect(readFileSync(join(tmp.dir, 'data/mqtt/broker-server.crt'), 'utf8')).toBe(brokerCert);
    expect(daemon.logs.filter((l) => l.msg === 'certificate issued')).toEqual([]);
    await stop(daemon);
  });

  it('offers only AEAD suites with forward secrecy, as openssl sees them, and ends a connection that never starts its handshake', async () => {
    const file = config(tmp.dir, ['  port: 0', '  headersTimeoutMs: 1000', '  requestTimeoutMs: 2000', '  tls:', '    enabled: true']);
    daemon = Daemon.start(file);
    const { port } = await listeningPort(daemon);
    // Any suite OpenSSL knows may be offered by the client (SECLEVEL 0): the server must pick none of these.
    const refused = [
      'ECDHE-ECDSA-AES128-SHA',
      'ECDHE-ECDSA-AES256-SHA',
      'ECDHE-ECDSA-AES128-SHA256',
      'ECDHE-ECDSA-AES256-SHA384',
      'ECDHE-ECDSA-AES128-CCM8',
      'ECDHE-ECDSA-AES256-CCM',
      'ECDHE-ECDSA-ARIA128-GCM-SHA256',
      'ECDHE-ECDSA-CAMELLIA128-SHA256',
    ];
    for (const cipher of refused) {
      const r = await sClient(port, ['-tls1_2', '-cipher', `${cipher}:@SECLEVEL=0`]);
      expect(r.ok, `${cipher} was accepted: ${r.output.slice(-400)}`).toBe(false);
    }
    for (const cipher of ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305']) {
      const r = await sClient(port, ['-tls1_2', '-cipher', cipher]);
      expect(r.ok, `${cipher}: ${r.output.slice(-400)}`).toBe(true);
      expect(r.output).toContain(`Cipher is ${cipher}`);
    }
    // Offered everything, the server picks by its own order: an AEAD suite.
    expect((await sClient(port, ['-tls1_2', '-cipher', 'ALL:@SECLEVEL=0'])).output).toContain('Cipher is ECDHE-ECDSA-AES128-GCM-SHA256');
    expect((await sClient(port, ['-tls1_3'])).output).toMatch(/Cipher is TLS_AES_128_GCM_SHA256/);
    // A connection that sends nothing is closed once http.headersTimeoutMs has passed (Node's TLS default would wait 120 s).
    await expect(raw(port, '')).resolves.toBe('');
    // A plain request without a Host this listener knows is still told, without echoing the name.
    const answer = await raw(port, 'GET /api/v1/devices HTTP/1.1\r\nHost: evil.example\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(answer).toContain('"code":"HTTPS_REQUIRED"');
    expect(answer).not.toContain('evil.example');
    await stop(daemon);
  });

  it('serves a certificate of its own from certFile and keyFile when the gateway CA issued it; refuses another key or another CA', async () => {
    const made = await openssl(
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=other',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        'other.key',
        '-out',
        'other.crt',
      ],
      tmp.dir,
    );
    expect(made.ok, made.stderr).toBe(true);
    const file = config(tmp.dir, ['  port: 0']);
    expect((await runCli(['ca', 'init', '--config', file])).code).toBe(0);
    const issued = await runCli([
      'ca',
      'issue',
      '--profile',
      'broker-server',
      '--id',
      'gw-own-http',
      '--dns',
      'localhost',
      '--ip',
      '127.0.0.1',
      '--generate-key',
      '--out',
      join(tmp.dir, 'own'),
      '--config',
      file,
    ]);
    expect(issued.code, issued.stderr).toBe(0);
    const tls = (cert: string, key: string) => [
      '  port: 0',
      '  tls:',
      '    enabled: true',
      `    certFile: ${join(tmp.dir, cert)}`,
      `    keyFile: ${join(tmp.dir, key)}`,
    ];
    daemon = Daemon.start(config(tmp.dir, tls('own/cert.pem', 'other.key')));
    expect(await exitCode(daemon)).toBe(78);
    expect(daemon.stderr).toMatch(/http\.tls\.keyFile .*other\.key is not the key of the certificate/);

    daemon = Daemon.start(config(tmp.dir, tls('other.crt', 'other.key')));
    expect(await exitCode(daemon)).toBe(78);
    expect(daemon.stderr).toMatch(/http\.tls\.certFile .*other\.crt was not issued by the gateway CA/);

    daemon = Daemon.start(config(tmp.dir, tls('own/cert.pem', 'own/key.pem')));
    const { port } = await listeningPort(daemon);
    const own = readFileSync(join(tmp.dir, 'own', 'cert.pem'), 'utf8');
    expect((await get(`https://127.0.0.1:${port}/healthz`, apiEndpoint(loadConfig({ file, env: {} }).config).ca!)).status).toBe(200);
    expect(await servedCertificate(port)).toBe(new X509Certificate(own).toString());
    await stop(daemon);
  });
});
