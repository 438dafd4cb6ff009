import { generateKeyPair } from 'node:crypto';
import { promisify } from 'node:util';
import pino from 'pino';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { subjectAltName } from '../../certs/x509/extensions.js';
import { encodeName } from '../../certs/x509/name.js';
import { CaService } from '../../agent/ca/caService.js';
import { loadConfig } from '../../agent/config/load.js';
import { EventBus } from '../../agent/events.js';
import { Metrics } from '../../agent/metrics.js';
import { EnrollmentFlow } from '../../agent/onboarding/enrollment.js';
import { EnrollmentMetrics } from '../../agent/onboarding/enrollmentMetrics.js';
import { revocationDigest } from '../../agent/onboarding/opcuaCrl.js';
import { checkServerCsr } from '../../agent/onboarding/opcuaPolicy.js';
import { EnrollmentPolicy } from '../../agent/onboarding/policy.js';
import { SightingRecorder } from '../../agent/report/sightings.js';
import { Store } from '../../agent/store/database.js';
import { openRepositories, type Repositories } from '../../agent/store/repositories.js';
import { ReportRepository } from '../../agent/store/reportRepository.js';
import { seededDevice } from './consoleSeed.js';

const generate = promisify(generateKeyPair);
/** When the push renews a server's certificate: at two thirds of its life (as opcuaPush.ts schedules it). */
const renewalAt = (r: { notBefore: Date; notAfter: Date }) => new Date(r.notBefore.getTime() + ((r.notAfter.getTime() - r.notBefore.getTime()) * 2) / 3);

/** What seedPlant wrote: how many of each, and the ids it used (for the tests). */
export interface PlantSeed {
  mqtt: string[];
  opcua: string[];
  /** MQTT devices enrolled, then revoked by a technician. */
  revoked: string[];
  seconds: number;
}

export interface PlantOptions {
  /** The daemon's configuration file: the seed opens its database and its CA (made by `edge-agent ca init` beforehand). */
  config: string;
  devices: number;
  /** One device in this many is an OPC UA server (RSA key, pushed certificate); the rest are MQTT devices. */
  opcuaEvery?: number;
  /** One MQTT device in this many is revoked after its enrollment. */
  revokedEvery?: number;
  /** Enrollments in flight at once (the daemon's enrollment workers run side by side too). */
  concurrency?: number;
}

/**
 * A plant's inventory as the daemon's own code leaves it, written into the
 * database of `config` while no daemon runs on it: each MQTT device sends
 * an enrollment request with a P-256 CSR and the commissioning token through
 * the real EnrollmentFlow (request recorded, token use counted, device
 * pending, certificate issued by the gateway CA and recorded with the
 * request's outcome in one durable commit, device provisioned), then
 * announces itself over Sparkplug and is annotated with its place by a
 * technician; each OPC UA server is discovered, approved, gets a
 * certificate from its own RSA CSR under the opcua-application profile with
 * the push job's steps, and is provisioned; some MQTT devices are revoked
 * (CRL). Names, nameplates and places come from the console's seed.
 */
export async function seedPlant(options: PlantOptions): Promise<PlantSeed> {
  const started = performance.now();
  const log = pino({ level: 'silent' });
  const { config } = loadConfig({ file: options.config, env: {} });
  const { store } = Store.open({ ...config.store, integrityCheck: 'off' }, log);
  const metrics = new Metrics();
  const bus = new EventBus(log);
  const repos = openRepositories(store);
  const ca = new CaService({ log, config: config.ca, gatewayId: config.agent.id, certificates: repos.certificates, metrics, bus, env: {} });
  const seed: PlantSeed = { mqtt: [], opcua: [], revoked: [], seconds: 0 };
  try {
    await ca.start();
    const { token } = repos.enrollments.createToken('commissioning', options.devices, new Date(Date.now() + 86_400_000));
    const policy = new EnrollmentPolicy(
      config.mqtt.policy,
      () => [],
      (secret) => repos.enrollments.tokenBySecret(secret),
    );
    const sightings = new SightingRecorder({ log, reports: new ReportRepository(store), certificates: repos.certificates, devices: repos.devices });
    const flow = new EnrollmentFlow({
      log,
      metrics: new EnrollmentMetrics(metrics.registry, () => 0),
      store,
      devices: repos.devices,
      enrollments: repos.enrollments,
      policy: () => policy,
      ca,
      gate: { cutOff: async () => {}, restore: async () => {} },
      provisioning: (name) => `${config.mqtt.topicPrefix}/${name}`,
      maxPending: () => config.mqtt.limits.maxPending,
      brokerUrl: () => 'mqtts://127.0.0.1:8884',
      reservedIds: () => [config.agent.id],
      witness: sightings,
    });
    const opcuaEvery = options.opcuaEvery ?? 50;
    const revokedEvery = options.revokedEvery ?? 100;
    const indices = Array.from({ length: options.devices }, (_, i) => i);
    const opcua = indices.filter((i) => i % opcuaEvery === opcuaEvery - 1);
    const mqtt = indices.filter((i) => i % opcuaEvery !== opcuaEvery - 1);
    // RSA keys take tens of milliseconds each: made side by side on the thread pool before the servers are onboarded.
    const rsa = await Promise.all(opcua.map(() => generate('rsa', { modulusLength: 2048 })));
    const concurrency = options.concurrency ?? 64;
    for (let k = 0; k < mqtt.length; k += concurrency) {
      await Promise.all(mqtt.slice(k, k + concurrency).map((i) => enrollMqtt(i, flow, repos, store, token)));
    }
    for (const [k, i] of mqtt.entries()) {
      const name = `sensor-${String(i).padStart(5, '0')}`;
      seed.mqtt.push(`mqtt:${name}`);
      if (k % revokedEvery === revokedEvery - 1) seed.revoked.push(revoke(name, ca, repos, store));
    }
    // The servers get the CRLs as they stand after the revocations: none of them is due for a CRL push at the daemon's start.
    const trust = ca.opcuaTrust();
    const crlRevocations = revocationDigest([...trust.trustedCrls, ...trust.issuerCrls]);
    for (const [k, i] of opcua.entries()) await onboardOpcua(i, new SoftwareKey(rsa[k]!.privateKey, 'rsa'), crlRevocations, ca, repos, store);
    seed.opcua = opcua.map((i) => `opcua:urn:plant:plc-${String(i).padStart(5, '0')}`);
    sightings.stop();
  } finally {
    await ca.stop();
    store.close();
  }
  seed.seconds = (performance.now() - started) / 1000;
  return seed;
}

/** An MQTT device's life so far: enrollment request (token), certificate, Sparkplug birth on mutual TLS, its place set by a technician. */
async function enrollMqtt(i: number, flow: EnrollmentFlow, repos: Repositories, store: Store, token: string): Promise<void> {
  const d = seededDevice(i);
  const name = `sensor-${String(i).padStart(5, '0')}`;
  const csr = buildCsr(SoftwareKey.generate('ec-p256'), encodeName({ commonName: name }));
  const nameplate = { manufacturer: d.manufacturer, model: d.model, serialNumber: d.serial, firmwareVersion: `1.${i % 7}.0` };
  const answer = await flow.submit(
    name,
    { requestId: `commissioning-${i}`, csr, nameplate, enrollmentToken: token },
    { responseTopic: `edge/prov/v1/${name}/response` },
  );
  if (answer?.status !== 'issued') throw new Error(`seed: ${name} was answered ${answer?.status ?? 'nothing'}: ${answer?.reason ?? ''}`);
  store.transaction(() => {
    repos.devices.apply({
      protocol: 'mqtt',
      name,
      to: 'provisioned',
      cause: 'sparkplug announcement: online',
      actor: 'discovery',
      details: { topic: `spBv1.0/plant/NBIRTH/${name}` },
      patch: { fillNameplate: nameplate, source: { sparkplug: { groupId: 'plant', edgeNode: name } }, online: true },
    });
  });
  annotate('mqtt', name, d, repos, store);
}

/** A technician's annotation through the API: the device's place and asset tag. */
function annotate(protocol: 'mqtt' | 'opcua', name: string, d: ReturnType<typeof seededDevice>, repos: Repositories, store: Store): void {
  const changes = { location: d.location, ...(d.assetTag ? { assetTag: d.assetTag } : {}) };
  store.transaction(() => {
    const device = repos.devices.byName(protocol, name)!;
    repos.devices.apply({
      protocol,
      name,
      to: device.state,
      cause: `annotated: ${Object.keys(changes).join(' and ')}`,
      actor: 'admin',
      details: changes,
      patch: changes,
      seen: false,
    });
    repos.audit.add({ actor: 'admin', role: 'admin', action: 'device.annotate', target: device.id, outcome: 'done', details: changes });
  });
}

/** An OPC UA server: discovered, approved for push by a technician, its CSR answered with a certificate, provisioned. */
async function onboardOpcua(i: number, key: SoftwareKey, crlRevocations: string, ca: CaService, repos: Repositories, store: Store): Promise<void> {
  const d = seededDevice(i);
  const name = `urn:plant:plc-${String(i).padStart(5, '0')}`;
  const id = `opcua:${name}`;
  const host = `10.20.${Math.floor(i / 250) % 250}.${1 + (i % 250)}`;
  const endpointUrl = `opc.tcp://${host}:4840`;
  const source = {
    endpointUrl,
    applicationUri: name,
    productUri: `urn:${d.manufacturer.replace(/ /g, '')}:plc`,
    certificateThumbprint: `${i}`.padStart(64, '0'),
  };
  store.transaction(() =>
    repos.devices.apply({
      protocol: 'opcua',
      name,
      to: 'discovered',
      cause: 'found by discovery',
      actor: 'discovery',
      details: { endpointUrl },
      patch: { nameplate: { manufacturer: d.manufacturer, model: d.model, serialNumber: d.serial }, source: { opcua: source }, online: true },
    }),
  );
  store.durable(() => {
    repos.pushes.approve(id, name, 'technician:admin', source.certificateThumbprint, 'approved for push provisioning by admin');
    repos.devices.apply({
      protocol: 'opcua',
      name,
      to: 'pending',
      cause: 'approved for push provisioning by admin',
      actor: 'technician:admin',
      patch: { blocked: false, reason: null },
      seen: false,
    });
  });
  const job = store.durable(() => repos.pushes.begin(id));
  const step = (s: Parameters<Repositories['pushes']['log']>[2], detail?: string) => {
    // The push fsyncs each step; the rows are the same at normal durability, and the seed does not wait for 4,000 fsyncs.
    store.transaction(() => repos.pushes.log(id, job.attempts, s, 'begun'));
    store.transaction(() => repos.pushes.log(id, job.attempts, s, 'ok', detail));
  };
  step('connect');
  step('session');
  const csr = Buffer.from(
    buildCsr(key, encodeName({ commonName: name.slice(-64) }), [subjectAltName({ uris: [name], ipAddresses: [host] })]).replace(/-----[^-]+-----|\s/g, ''),
    'base64',
  );
  step('csr', `${csr.length} bytes`);
  const prepared = checkServerCsr(csr, name);
  step('check-csr');
  const issued = await ca.issue({
    profile: 'opcua-application',
    identity: name,
    commonName: name.slice(-64),
    csr: prepared,
    origin: 'requester',
    renew: true,
    alongside: (r) => repos.pushes.issued(id, r.serial),
    ipAddresses: [host],
  });
  const serial = issued.record.serial;
  step('issue', `serial ${serial}`);
  for (const s of ['update', 'trust', 'apply', 'verify'] as const) step(s);
  const note = `certificate ${serial} pushed and presented by the server; CRLs delivered`;
  store.durable(() => {
    repos.pushes.finish(id, 'done', note, { applied: serial, nextAttemptAt: renewalAt(issued.record), crlDelivered: true, crlRevocations });
    repos.devices.apply({
      protocol: 'opcua',
      name,
      to: 'provisioned',
      cause: note,
      actor: 'agent',
      details: { serial, notAfter: issued.record.notAfter.toISOString() },
      patch: { certificateSerial: serial, reason: null, online: true },
    });
  });
  annotate('opcua', name, d, repos, store);
}

/** A technician's revocation (device actions): the certificate first, then the device's state. */
function revoke(name: string, ca: CaService, repos: Repositories, store: Store): string {
  const current = ca.current('mqtt-device', name)!;
  ca.revoke(current.serial, 'keyCompromise');
  const reason = 'revoked by admin: returned for repair';
  store.durable(() =>
    repos.devices.apply({
      protocol: 'mqtt',
      name,
      to: 'revoked',
      cause: reason,
      actor: 'technician:admin',
      seen: false,
      details: { serial: current.serial },
      patch: { blocked: true, preapproved: false, reason },
    }),
  );
  return `mqtt:${name}`;
}
