import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import pino from 'pino';
import sparkplugPayload from 'sparkplug-payload';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../../agent/store/database.js';
import { apiUser } from '../../helpers/apiUser.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { readPem } from '../../helpers/enrollment.js';
import { freePort } from '../../helpers/mosquitto.js';
import { startOpcuaServer, type OpcuaServerHandle } from '../../helpers/opcuaServer.js';
import { receiverPki, startReceiver, type Receiver } from '../../helpers/receiver.js';

const GATEWAY = 'gw-report';
const ADMIN = { username: 'secadmin', password: 'Plant-1-secret' };
const codec = sparkplugPayload.get('spBv1.0')!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface FindingJson {
  kind: string;
  subject: string;
  deviceId: string | null;
  summary: string;
  evidence: Record<string, unknown>;
  firstSeen: string;
  lastSeen: string;
  openedAt: string;
}
interface ReportJson {
  generatedAt: string;
  counts: Record<string, number>;
  findings: FindingJson[];
}

/** Polls `find` until it returns something, or fails after `timeoutMs` saying `what` and what it saw last. */
async function until<T>(what: string, find: () => Promise<T | undefined>, seen: () => unknown, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await find();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(seen())}`);
    await sleep(300);
  }
}

/** What the operator copies into a server's PKI once (edge-agent opcua client-bundle). */
function commissioning(bundle: string) {
  const read = (sub: string) => readdirSync(join(bundle, sub)).map((f) => readFileSync(join(bundle, sub, f)));
  return { certificate: read('trusted/certs')[0]!, issuers: read('issuers/certs'), crls: read('issuers/crl') };
}

/** RFC 4180 lines (no field here holds a line break) split into fields. */
function csvRows(text: string): string[][] {
  return text
    .replace(/^\uFEFF/, '')
    .split('\r\n')
    .filter((l) => l !== '')
    .map((line) => {
      const fields: string[] = [];
      let i = 0;
      while (i <= line.length) {
        if (line[i] === '"') {
          let value = '';
          i += 1;
          for (;;) {
            const q = line.indexOf('"', i);
            value += line.slice(i, q);
            if (line[q + 1] === '"') {
              value += '"';
              i = q + 2;
            } else {
              i = q + 2;
              break;
            }
          }
          fields.push(value);
        } else {
          const comma = line.indexOf(',', i);
          const end = comma < 0 ? line.length : comma;
          fields.push(line.slice(i, end));
          i = end + 1;
        }
      }
      return fields;
    });
}

describe('the device report: every device accounted for (real daemon, embedded broker, node-opcua servers, reference receiver)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let base: string;
  let token: string;
  let ports: { provisioning: number; mtls: number };
  let press: OpcuaServerHandle;
  let legacy: OpcuaServerHandle;
  let receiver: Receiver;
  let pki: Awaited<ReturnType<typeof receiverPki>>;
  let last: ReportJson | undefined;
  const cli = (...args: string[]) => runCli([...args, '--config', config]);
  const report = async (query = ''): Promise<ReportJson> => {
    const r = await fetch(`${base}/api/v1/report${query}`, { headers: { authorization: `Bearer ${token}` } });
    expect(r.status, await r.clone().text()).toBe(200);
    last = (await r.json()) as ReportJson;
    return last;
  };
  const finding = (r: ReportJson, kind: string, subject: string) => r.findings.find((f) => f.kind === kind && f.subject === subject);
  const configYaml = (patchPolicy: string) =>
    [
      'agent:',
      `  id: ${GATEWAY}`,
      `  dataDir: ${join(tmp.dir, 'data')}`,
      'http:',
      '  port: 0',
      // node-opcua verifies no ECDSA signature in a chain: OPC UA peers need an RSA root (docs/opcua.md).
      'ca:',
      '  rootKeyType: rsa-2048',
      // A short-lived server certificate: ending within report.expiringDays (14) from the day it is issued.
      '  validityDays:',
      '    opcuaApplication: 10',
      'opcua:',
      `  endpoints: [${press.endpointUrl}, ${legacy.endpointUrl}]`,
      '  timeoutMs: 8000',
      '  push:',
      '    approve:',
      "      - { applicationUri: 'urn:report:press-*' }",
      '    securityAdmins:',
      `      - { applicationUri: 'urn:report:*', username: ${ADMIN.username}, passwordFile: ${join(tmp.dir, 'admin.pass')} }`,
      '    stepTimeoutMs: 10000',
      '    applyWaitMs: 20000',
      '    retryInitialMs: 600000',
      'sync:',
      '  enabled: true',
      `  baseUrl: https://127.0.0.1:${receiver.port}`,
      `  caFile: ${pki.ca}`,
      `  tokenFile: ${join(tmp.dir, 'token')}`,
      '  idleMs: 200',
      '  retryInitialMs: 200',
      '  retryMaxMs: 1000',
      '  reconcileIntervalMs: 0',
      'report:',
      '  intervalSeconds: 10',
      '  patchPolicy:',
      patchPolicy,
      '',
    ].join('\n');

  beforeAll(async () => {
    tmp = tempDir();
    pki = await receiverPki(tmp.dir);
    writeFileSync(join(tmp.dir, 'token'), 'cmms-token-1\n', { mode: 0o600 });
    writeFileSync(join(tmp.dir, 'admin.pass'), `${ADMIN.password}\n`, { mode: 0o600 });
    // First a receiver of the contract before events (404): the events wait in report_events, where the test reads them.
    receiver = await startReceiver({
      db: join(tmp.dir, 'cmms.db'),
      cert: pki.cert,
      key: pki.key,
      args: ['--token-file', join(tmp.dir, 'token'), '--no-events'],
    });
    [press, legacy] = await Promise.all([
      startOpcuaServer({
        host: '127.0.0.12',
        applicationUri: 'urn:report:press-1',
        applicationName: 'Press 1',
        securityModes: 'secure',
        acceptUnknownClientCertificates: false,
        pushManagement: { securityAdmin: ADMIN },
      }),
      startOpcuaServer({ host: '127.0.0.13', applicationUri: 'urn:report:legacy-hmi', applicationName: 'Legacy HMI' }),
    ]);
    ports = { provisioning: await freePort(), mtls: await freePort() };
    config = writeConfig(tmp.dir, configYaml("    - { manufacturer: 'Fixture *', model: 'Fixture PLC', minVersion: 1.2.0, reason: 'advisory FA-2026-01' }"));
    daemon = Daemon.start(config, { env: { EDGE_AGENT_MQTT_PROVISIONING_PORT: String(ports.provisioning), EDGE_AGENT_MQTT_MTLS_PORT: String(ports.mtls) } });
    base = await daemon.ready();
    token = await apiUser(config, 'auditor', 'viewer');
    const bundle = await cli('opcua', 'client-bundle', '--out', join(tmp.dir, 'bundle'));
    expect(bundle.code, bundle.stderr).toBe(0);
    await press.trustCaIssuedClient(commissioning(join(tmp.dir, 'bundle')));
    const run = await cli('opcua', 'discover', '--json');
    expect(run.code, run.stderr).toBe(0);
  }, 240_000);

  afterAll(async () => {
    await daemon?.dispose();
    await receiver?.stop();
    await Promise.all([press, legacy].map((s) => s?.stop()));
    tmp?.cleanup();
  });

  it('reports a plain MQTT client announcing a Sparkplug birth without a certificate, with its topic, client id and address', async () => {
    const ca = readPem(join(tmp.dir, 'data', 'ca', 'root.crt'));
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.provisioning}`, { clientId: 'edge-node-7', ca, reconnectPeriod: 0 });
    const birth = codec.encodePayload({ timestamp: Date.now(), seq: 0, metrics: [{ name: 'bdSeq', type: 'UInt64', value: 0 }] });
    const from = daemon.logs.length;
    await client.publishAsync('spBv1.0/plant1/NBIRTH/edge-node-7', Buffer.from(birth), { qos: 0 }).catch(() => undefined);
    await daemon.waitForLog((l) => l.msg === 'broker refused a publish' && l.topic === 'spBv1.0/plant1/NBIRTH/edge-node-7', 30_000, from);
    await client.endAsync().catch(() => undefined);

    const seen = await until(
      'the uncertified announcement in the report',
      async () => finding(await report(), 'shadow.uncertified_announcement', 'mqtt:edge-node-7'),
      () => last,
    );
    expect(seen).toMatchObject({
      deviceId: null,
      evidence: { listener: 'provisioning', clientId: 'edge-node-7', topic: 'spBv1.0/plant1/NBIRTH/edge-node-7', bytes: birth.length, count: 1 },
    });
    expect(seen.evidence.remoteAddress).toMatch(/127\.0\.0\.1$/);
    expect(seen.summary).toContain('spBv1.0/plant1/NBIRTH/edge-node-7');
    // It left without asking to enroll: a client the provisioning listener saw, no identity explains.
    const left = await until(
      'the unenrolled client in the report',
      async () => finding(await report(), 'shadow.unenrolled_client', 'mqtt:edge-node-7'),
      () => last,
    );
    expect(left.evidence).toMatchObject({ clientId: 'edge-node-7', left: true });
  });

  it('reports a server found and never approved, below the patch policy by its BuildInfo, and a pushed certificate about to expire', async () => {
    const all = await until(
      'the unprovisioned, unpatched and expiring findings',
      async () => {
        const r = await report();
        const wanted = [
          finding(r, 'shadow.unprovisioned_server', `opcua:${legacy.applicationUri}`),
          finding(r, 'unpatched', `opcua:${legacy.applicationUri}`),
          r.findings.find((f) => f.kind === 'expiring' && f.evidence.identity === press.applicationUri),
        ];
        // The certificate is recorded when issued, the server provisioned once the push is verified: both, then.
        const pushed = !finding(r, 'shadow.unprovisioned_server', `opcua:${press.applicationUri}`);
        return pushed && wanted.every((f) => f !== undefined) ? (wanted as FindingJson[]) : undefined;
      },
      () => last,
      180_000,
    );
    const [unprovisioned, unpatched, expiring] = all as [FindingJson, FindingJson, FindingJson];
    expect(unprovisioned).toMatchObject({
      evidence: { state: 'discovered', endpointUrl: legacy.endpointUrl, manufacturer: 'Fixture Automation', model: 'Fixture PLC', softwareVersion: '1.0.0' },
    });
    expect(unprovisioned.deviceId).toMatch(/^opcua:/);
    // The fixture's BuildInfo SoftwareVersion (1.0.0), read by discovery, is below the rule's minVersion.
    expect(unpatched).toMatchObject({
      deviceId: unprovisioned.deviceId,
      evidence: {
        softwareVersion: '1.0.0',
        rules: [0],
        violations: [{ rule: 0, what: 'below minVersion 1.2.0', minVersion: '1.2.0', reason: 'advisory FA-2026-01' }],
      },
    });
    // The pushed server's certificate, issued for 10 days, ends within report.expiringDays (14) and nothing replaces it.
    expect(expiring).toMatchObject({ evidence: { profile: 'opcua-application', expiringDays: 14 } });
    expect(expiring.deviceId).toMatch(/^opcua:/);
    const days = (Date.parse(String(expiring.evidence.notAfter)) - Date.parse(expiring.firstSeen)) / 86_400_000;
    expect(days).toBeGreaterThan(9);
    expect(days).toBeLessThanOrEqual(10.01);
    expect(last!.counts).toMatchObject({ 'shadow.unprovisioned_server': 1, unpatched: 1, expiring: 1, 'shadow.uncertified_announcement': 1 });
  }, 240_000);

  it('shows the same findings to ?kind=, the CLI (table, --json, --csv) and the CSV route', async () => {
    const only = await report('?kind=unpatched');
    expect(only.findings.map((f) => f.kind)).toEqual(['unpatched']);
    expect(only.counts['shadow.unprovisioned_server']).toBe(1);

    const json = await cli('report', '--json');
    expect(json.code, json.stderr).toBe(0);
    const viaCli = JSON.parse(json.stdout) as ReportJson;
    const kinds = (r: ReportJson) => r.findings.map((f) => `${f.kind} ${f.subject}`).sort();
    expect(kinds(viaCli)).toEqual(expect.arrayContaining(['unpatched opcua:urn:report:legacy-hmi', 'shadow.uncertified_announcement mqtt:edge-node-7']));

    const csv = await cli('report', '--csv', '--kind', 'shadow.uncertified_announcement');
    expect(csv.code, csv.stderr).toBe(0);
    const rows = csvRows(csv.stdout);
    expect(rows[0]).toEqual(['kind', 'subject', 'deviceId', 'summary', 'evidence', 'firstSeen', 'lastSeen', 'openedAt']);
    expect(rows.slice(1).map((r) => r.slice(0, 2))).toEqual([['shadow.uncertified_announcement', 'mqtt:edge-node-7']]);
    expect(JSON.parse(rows[1]![4]!)).toMatchObject({ topic: 'spBv1.0/plant1/NBIRTH/edge-node-7' });

    const route = await fetch(`${base}/api/v1/report.csv?kind=unpatched`, { headers: { authorization: `Bearer ${token}` } });
    expect(route.status).toBe(200);
    expect(route.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    const bytes = Buffer.from(await route.arrayBuffer());
    // A byte order mark first (fetch's text() would drop it), then the header.
    expect(bytes.subarray(0, 3).toString('hex')).toBe('efbbbf');
    const text = bytes.toString('utf8');
    expect(text.startsWith('\uFEFFkind,subject,')).toBe(true);
    expect(
      csvRows(text)
        .slice(1)
        .map((r) => r[1]),
    ).toEqual(['opcua:urn:report:legacy-hmi']);

    const table = await cli('report');
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^unpatched\s+opcua:urn:report:legacy-hmi/m);
    expect(table.stdout).toContain('below minVersion 1.2.0');
  });

  it('counts them in /metrics and logs each opening once as an alarm', async () => {
    const metrics = await (await fetch(`${base}/metrics`)).text();
    for (const kind of ['shadow.uncertified_announcement', 'shadow.unprovisioned_server', 'unpatched', 'expiring'])
      expect(metrics, kind).toMatch(new RegExp(`^edge_agent_report_findings\\{kind="${kind.replace('.', '\\.')}"\\} 1$`, 'm'));
    expect(metrics).toMatch(/^edge_agent_report_findings\{kind="stale"\} 0$/m);
    const alarms = daemon.logs.filter((l) => l.msg === 'report finding opened');
    expect(alarms.filter((l) => l.kind === 'unpatched' && l.subject === 'opcua:urn:report:legacy-hmi')).toHaveLength(1);
    expect(alarms.every((l) => ['warn', '40'].includes(String(l.level)))).toBe(true);
  });

  it('queues each opening as a report_events row, which the reference receiver stores once it knows the route', async () => {
    const { store } = Store.open(
      { path: join(tmp.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 10_000, journalSizeLimitBytes: 1 << 26, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    );
    let bodies: { type: string; finding: { kind: string; subject: string; evidence: Record<string, unknown> } }[];
    try {
      bodies = (store.statement('SELECT type, body FROM report_events ORDER BY id').all() as { type: string; body: string }[]).map(
        (r) => JSON.parse(r.body) as (typeof bodies)[number],
      );
    } finally {
      store.close();
    }
    const opened = (kind: string, subject: string) =>
      bodies.find((b) => b.type === 'finding.opened' && b.finding.kind === kind && b.finding.subject === subject);
    expect(opened('shadow.uncertified_announcement', 'mqtt:edge-node-7')?.finding.evidence).toMatchObject({ topic: 'spBv1.0/plant1/NBIRTH/edge-node-7' });
    expect(opened('shadow.unprovisioned_server', `opcua:${legacy.applicationUri}`)).toBeDefined();
    expect(opened('unpatched', `opcua:${legacy.applicationUri}`)?.finding.evidence).toMatchObject({ softwareVersion: '1.0.0' });
    expect(bodies.some((b) => b.type === 'finding.opened' && b.finding.kind === 'expiring')).toBe(true);

    // The receiver now takes events: what waited is delivered and stored.
    const port = receiver.port;
    await receiver.stop();
    receiver = await startReceiver({ db: join(tmp.dir, 'cmms.db'), cert: pki.cert, key: pki.key, port, args: ['--token-file', join(tmp.dir, 'token')] });
    const stored = await until(
      'the receiver to store the findings',
      async () => {
        const events = receiver.events(GATEWAY).map((e) => e.event as { type: string; finding: { kind: string; subject: string } });
        const has = (kind: string, subject?: string) =>
          events.some((e) => e.type === 'finding.opened' && e.finding.kind === kind && (!subject || e.finding.subject === subject));
        return has('shadow.uncertified_announcement', 'mqtt:edge-node-7') &&
          has('shadow.unprovisioned_server', `opcua:${legacy.applicationUri}`) &&
          has('unpatched', `opcua:${legacy.applicationUri}`) &&
          has('expiring')
          ? events
          : undefined;
      },
      () => receiver.events(GATEWAY).length,
      90_000,
    );
    expect(stored.length).toBeGreaterThanOrEqual(4);
  });

  it('refuses a reload with an unparseable patch version, keeping the running policy', async () => {
    writeFileSync(config, configYaml("    - { manufacturer: 'Fixture *', minVersion: 'V1.04 build 7' }"));
    const from = daemon.logs.length;
    daemon.kill('SIGHUP');
    const refused = await daemon.waitForLog((l) => l.msg === 'reload refused: configuration invalid; keeping the running one', 30_000, from);
    expect(JSON.stringify(refused.problems)).toContain('report.patchPolicy.0.minVersion');
    // The running policy still applies.
    expect(finding(await report(), 'unpatched', `opcua:${legacy.applicationUri}`)).toBeDefined();
  });
});
