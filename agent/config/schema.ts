import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { z } from 'zod';
import { DEVICE_ID_PATTERN } from '../../certs/profiles/deviceId.js';
import { authSchema, defaultAuthConfig } from './authSchema.js';
import { configurationSchema, defaultConfigurationConfig } from './configurationSchema.js';
import { defaultReportConfig, reportSchema } from './reportSchema.js';
import { DNS_NAME, isLoopbackHost, STRONG_CIPHERS } from './network.js';

/**
 * The one schema of the configuration file. The TypeScript type `Config` is
 * inferred from it; defaults live in `defaultConfig()` and are merged in
 * before validation, so the schema only validates and never fills in.
 * Every object is strict: an unknown key is an error, not a silent no-op.
 * Each `describe()` text is shown as the hint when that key is wrong.
 */
const int = (min: number, max: number, what: string) => z.number().int().min(min).max(max).describe(`${what} (whole number, ${min} to ${max})`);

/**
 * Marks a key (or a whole section) whose change needs a restart: SIGHUP
 * refuses a reload that touches it (config/diff.ts reads the mark). Kept on
 * the schema so that a new key is placed on one side or the other where it
 * is declared, not in a list beside it.
 */
function restart<T extends z.ZodType>(schema: T): T {
  return schema.meta({ restart: true }) as T;
}

/** Whether `schema` carries the restart mark. */
export function needsRestart(schema: z.ZodType): boolean {
  return schema.meta()?.restart === true;
}

const keyType = z.enum(['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096']);

const policyAction = z.enum(['approve', 'hold', 'reject']).describe('approve, hold (for a technician) or reject');
const pattern = z.string().min(1).max(128).describe('a pattern where * matches any run of characters and ? one character; case-insensitive');

/** One enrollment rule; rules are tried in order and the first that applies decides. */
const policyRule = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('token'),
    action: policyAction,
  }),
  z.strictObject({
    kind: z.literal('claim'),
    manufacturerCaFile: z.string().min(1).describe('PEM file of the manufacturer CA certificates (root and intermediates) that IDevID claims must chain to'),
    action: policyAction,
  }),
  z.strictObject({
    kind: z.literal('allowlist'),
    manufacturer: pattern.optional(),
    model: pattern.optional(),
    serialNumber: pattern.optional(),
    action: policyAction,
  }),
]);

/** Empty, or an mqtts:// URL with a host (checked by the URL parser the agent then uses). */
const mqttsUrl = z.string().refine((v) => {
  if (v === '') return true;
  try {
    const u = new URL(v);
    return u.protocol === 'mqtts:' && u.hostname !== '';
  } catch {
    return false;
  }
}, 'must be empty or an mqtts://host:port URL');

const mqttSchema = z.strictObject({
  enabled: restart(z.boolean().describe('run MQTT onboarding and discovery (the embedded broker, or the link to mqtt.brokerUrl)')),
  topicPrefix: restart(
    z
      .string()
      .regex(/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/)
      .max(128)
      .describe('prefix of the provisioning topics, such as edge/prov/v1 (levels of A-Z a-z 0-9 . _ -, no wildcards)'),
  ),
  brokerUrl: restart(
    mqttsUrl.describe('external broker (Mosquitto) as mqtts://host:port, reached with the agent-client certificate; empty runs the embedded broker'),
  ),
  deviceBrokerUrl: mqttsUrl.describe('mutual-TLS URL given to devices in the issued answer; empty means the embedded listener, or mqtt.brokerUrl'),
  listenHost: restart(z.string().min(1).describe('address of the embedded broker listeners (127.0.0.1 unless devices reach it over the network)')),
  provisioningPort: restart(int(0, 65_535, 'port of the embedded provisioning listener; 0 picks a free port')),
  provisioningTls: restart(
    z.boolean().describe('true: the provisioning listener speaks TLS with the broker certificate; false: plain TCP where the plant network allows it'),
  ),
  mtlsPort: restart(int(0, 65_535, 'port of the embedded mutual-TLS listener; 0 picks a free port')),
  maxPayloadBytes: restart(int(1_024, 1_048_576, 'largest enrollment request or announcement accepted, in bytes')),
  mosquittoDir: z
    .string()
    .describe('with an external Mosquitto: the directory written by edge-agent broker mosquitto-config, where the agent keeps acl-devices and crl.pem current'),
  mosquittoPidFile: z.string().describe('with an external Mosquitto: its pid_file, signalled (SIGHUP) to reread the ACL after a revocation'),
  mosquittoReloadCommand: z
    .string()
    .describe('with an external Mosquitto: command run (by /bin/sh) instead of the SIGHUP, such as "sudo systemctl reload mosquitto"'),
  limits: z.strictObject({
    perDeviceBurst: int(1, 1_000, 'enrollment requests a device may send at once before it is rate limited'),
    perDeviceIntervalMs: int(0, 3_600_000, 'after the burst, one more request per this many milliseconds per device'),
    globalPerSecond: int(1, 100_000, 'enrollment requests accepted per second from all devices together'),
    queueSize: int(1, 1_000_000, 'requests waiting to be handled; more are dropped (and counted)'),
    workers: int(1, 256, 'requests handled at the same time (those issued together share one durable commit)'),
    maxPending: int(1, 1_000_000, 'requests from new devices waiting for a technician; beyond it new devices are rejected until some are decided'),
  }),
  policy: z.strictObject({
    rules: z.array(policyRule).max(100).describe('enrollment rules, tried in order; kinds: token, claim, allowlist'),
    default: policyAction.describe('what happens to a request no rule decides: approve, hold or reject'),
    renewal: z
      .enum(['reject', 'hold', 'policy'])
      .describe('a new CSR from a device that is already provisioned: reject, hold for a technician, or run the rules again (policy)'),
  }),
  discovery: z.strictObject({
    sparkplug: z.boolean().describe('record Sparkplug B nodes and devices (spBv1.0/+/NBIRTH|DBIRTH|NDEATH|DDEATH)'),
    homie: z.boolean().describe('record Homie devices (homie/+/$state, $name)'),
    homeAssistant: z.boolean().describe('record Home Assistant discovery announcements (homeassistant/+/+/config)'),
  }),
  actionPollMs: int(50, 60_000, 'how often the daemon picks up technician decisions (devices approve, reject, revoke), in milliseconds'),
});

const opcuaUrl = z
  .string()
  .regex(/^opc\.tcp:\/\/[^\s/]+(:\d{1,5})?(\/\S*)?$/)
  .describe('an OPC UA URL: opc.tcp://host:port[/path]');
const octet = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const cidr = z
  .string()
  .regex(new RegExp(`^(${octet}\\.){3}${octet}(\\/(3[0-2]|[12]?\\d))?$`))
  .describe('an IPv4 range in CIDR notation, such as 10.20.0.0/24 (a single address without /32 is allowed)');

/** A server approved for push provisioning when every field given matches (patterns as in mqtt.policy). */
const opcuaApproveRule = z
  .strictObject({
    applicationUri: pattern.optional(),
    manufacturer: pattern.optional(),
    productUri: pattern.optional(),
    thumbprint: z
      .string()
      .regex(/^[0-9A-Fa-f]{40}$/)
      .optional()
      .describe("the SHA-1 thumbprint (40 hex digits) of the server's certificate as discovery first saw it"),
  })
  .refine((r) => Object.keys(r).length > 0, { message: 'an approve rule needs at least one of applicationUri, manufacturer, productUri, thumbprint' });

/** SecurityAdmin credentials for the servers whose applicationUri matches. */
const opcuaSecurityAdmin = z
  .strictObject({
    applicationUri: pattern.describe('the servers these credentials are for: an applicationUri or a pattern'),
    username: z.string().min(1).max(256).describe('a user holding the SecurityAdmin role on those servers'),
    password: z.string().max(256).describe('its password; prefer passwordFile'),
    passwordFile: z.string().describe('file holding the password (first line)'),
  })
  .partial({ password: true, passwordFile: true })
  .refine((a) => (a.password ?? '') !== '' || (a.passwordFile ?? '') !== '', { message: 'give password or passwordFile' });

const opcuaPushSchema = z.strictObject({
  enabled: z.boolean().describe('push CA-issued certificates to approved servers (OPC UA Part 12)'),
  approve: z.array(opcuaApproveRule).max(1_000).describe('servers approved without a technician (a rule matches when all its fields do)'),
  securityAdmins: z.array(opcuaSecurityAdmin).max(1_000).describe('SecurityAdmin credentials per server or pattern; the first match is used'),
  concurrency: int(1, 64, 'servers provisioned at the same time'),
  stepTimeoutMs: int(1_000, 600_000, 'time one push step (one call to the server) may take, in milliseconds'),
  applyWaitMs: int(1_000, 600_000, 'time a server may take to come back with its new certificate after ApplyChanges, in milliseconds'),
  retryInitialMs: int(1_000, 86_400_000, 'wait before the first retry of a failed push, in milliseconds (doubles with each failure)'),
  retryMaxMs: int(1_000, 604_800_000, 'longest wait between retries, in milliseconds'),
});

const syncSchema = z
  .strictObject({
    enabled: restart(z.boolean().describe('send the inventory to the CMMS receiver at sync.baseUrl (docs/upstream-api.md)')),
    baseUrl: restart(z.string().describe('the receiver, an https:// URL; the contract paths (/v1/gateways/...) are appended')),
    gatewayId: restart(
      z
        .string()
        .regex(new RegExp(`^$|${DEVICE_ID_PATTERN.source}`))
        .describe('this gateway at the receiver; empty: agent.id'),
    ),
    caFile: restart(z.string().describe("PEM bundle the receiver's certificate must chain to (always checked)")),
    tokenFile: restart(z.string().describe('file holding a bearer token (first line); empty: none')),
    clientCertificate: restart(z.boolean().describe("mutual TLS with the agent's agent-client certificate from the gateway CA")),
    batchSize: int(1, 10_000, 'items per batch at most'),
    batchMaxBytes: int(1_024, 64 * 1024 * 1024, 'bytes per batch body at most'),
    timeoutMs: restart(int(100, 600_000, 'time one request may take, in milliseconds')),
    retryInitialMs: int(10, 3_600_000, 'first wait after a failure, in milliseconds (doubles, with full jitter)'),
    retryMaxMs: int(10, 86_400_000, 'longest wait between attempts, in milliseconds'),
    idleMs: int(10, 3_600_000, 'how often to look for changes when nothing waits, in milliseconds'),
    reconcileOnStart: z.boolean().describe('compare with what the receiver holds at every start'),
    reconcileIntervalMs: z
      .number()
      .int()
      .refine((v) => v === 0 || (v >= 1_000 && v <= 604_800_000), 'must be 0 (off) or 1000 to 604800000')
      .describe(
        'compare with what the receiver holds this often and report what diverged, in milliseconds; ' +
          '0: only at start and on request (whole number, 0 or 1000 to 604800000)',
      ),
    splitAfterServerErrors: int(1, 1_000, '5xx answers to the same batch after which it is split to find the item at fault'),
    stuckAfterMs: int(1_000, 604_800_000, 'a batch unanswered this long raises the stuck alarm, in milliseconds'),
    location: z
      .strictObject({ site: z.string().max(128), area: z.string().max(128), line: z.string().max(128), cell: z.string().max(128) })
      .describe('where this gateway is: sent with every record (empty fields are left out)'),
  })
  .refine((v) => !v.enabled || /^https:\/\/[^/\s]+/.test(v.baseUrl), { message: 'sync.enabled needs sync.baseUrl, an https:// URL', path: ['baseUrl'] })
  .refine((v) => !v.enabled || v.caFile !== '', { message: "sync.enabled needs sync.caFile: the receiver's certificate is always checked", path: ['caFile'] })
  .refine((v) => !v.enabled || v.tokenFile !== '' || v.clientCertificate, {
    message: 'sync.enabled needs a way to authenticate: sync.tokenFile, sync.clientCertificate, or both',
    path: ['tokenFile'],
  });

const opcuaSchema = z.strictObject({
  enabled: restart(z.boolean().describe('run OPC UA discovery')),
  endpoints: z.array(opcuaUrl).max(10_000).describe('servers always probed, as opc.tcp:// URLs'),
  discoveryServers: z.array(opcuaUrl).max(100).describe('Local Discovery Servers asked with FindServers (and FindServersOnNetwork)'),
  scan: z
    .strictObject({
      ranges: z.array(cidr).max(256).describe('IPv4 ranges scanned (CIDR); they also bound what an LDS answer may make the agent contact'),
      ports: z
        .array(int(1, 65_535, 'a TCP port'))
        .min(1)
        .max(16)
        .describe('TCP ports tried on every address of the ranges'),
      concurrency: int(1, 1_024, 'addresses probed at the same time'),
      maxAddresses: int(1, 1_048_576, 'refuse a scan of more addresses than this (all ranges together)'),
    })
    .refine((scan) => scan.ranges.reduce((n, r) => n + 2 ** (32 - Number(r.split('/')[1] ?? 32)), 0) <= scan.maxAddresses, {
      message: 'the ranges hold more addresses than maxAddresses allows',
    }),
  timeoutMs: int(100, 120_000, 'time one server (or one address) may take to answer, in milliseconds'),
  runOnStart: z.boolean().describe('run a discovery when the agent starts'),
  intervalMs: int(0, 604_800_000, 'run a discovery this often, in milliseconds; 0 runs only at start (runOnStart) and on demand'),
  mdns: z.strictObject({
    enabled: z.boolean().describe('ask the local link for OPC UA servers over multicast DNS (_opcua-tcp._tcp, LDS-ME) at each discovery run'),
    interface: z
      .string()
      .regex(/^$|^(\d{1,3}\.){3}\d{1,3}$/)
      .describe("IPv4 address of the interface to send the query on; empty: the system's choice"),
    listenMs: int(200, 60_000, 'how long to collect answers, in milliseconds'),
  }),
  push: opcuaPushSchema,
});

const httpName = z
  .string()
  .refine((v) => isIP(v) === 4 || (isIP(v) === 6 && !/[.%]/.test(v)) || DNS_NAME.test(v), 'must be a DNS name or an IP address')
  .describe('a DNS name (such as gw3.plant.example) or an IP address (IPv6 without zone id or embedded IPv4), without port');

const httpSchema = z
  .strictObject({
    host: z
      .string()
      .min(1)
      .describe('address of the local listener (health, metrics, the API); anything but 127.0.0.0/8, ::1 or localhost needs http.tls.enabled: true'),
    port: int(0, 65_535, 'TCP port of the local listener; 0 picks a free port and logs it'),
    names: z
      .array(httpName)
      .max(64)
      .describe(
        'further DNS names and IP addresses clients reach the listener by; the certificate the agent issues itself names them, ' +
          'and the Host header of every request must name one of them, localhost, 127.0.0.1, [::1] or http.host',
      ),
    maxConnections: int(8, 65_536, 'connections the listener keeps open at once; at the cap the one waiting longest without a request is closed for a new one'),
    headersTimeoutMs: int(
      1_000,
      300_000,
      'time a client has to send its request headers (and, with TLS, to finish its handshake) after connecting or after its previous request, in milliseconds',
    ),
    requestTimeoutMs: int(1_000, 600_000, 'time a client has to send its whole request, body included, in milliseconds (at least http.headersTimeoutMs)'),
    keepAliveTimeoutMs: int(100, 600_000, 'how long an idle keep-alive connection stays open, in milliseconds'),
    tls: z
      .strictObject({
        enabled: z.boolean().describe('serve HTTPS (TLS 1.2 or later) instead of plain HTTP; required when http.host is not a loopback address'),
        certFile: z.string().describe('PEM certificate (then its intermediates) to serve; empty: the agent issues one from the gateway CA'),
        keyFile: z.string().describe('PEM private key (unencrypted) of http.tls.certFile; set both or neither'),
        ciphers: z
          .array(z.string().refine((c) => STRONG_CIPHERS.includes(c), `must be one of ${STRONG_CIPHERS.join(', ')} (AEAD suites with forward secrecy)`))
          .min(1)
          .max(STRONG_CIPHERS.length)
          .refine((l) => new Set(l).size === l.length, 'names a suite twice')
          .refine((l) => l.some((c) => c.startsWith('ECDHE-')), 'needs at least one TLS 1.2 suite (ECDHE-...): TLS 1.2 clients would have none')
          .describe('TLS cipher suites, in order of preference: TLS 1.3 suites and TLS 1.2 ECDHE suites with AES-GCM or ChaCha20-Poly1305 only'),
      })
      .superRefine((t, ctx) => {
        if ((t.certFile === '') === (t.keyFile === '')) return;
        ctx.addIssue({
          code: 'custom',
          path: [t.certFile === '' ? 'certFile' : 'keyFile'],
          message:
            'http.tls.certFile and http.tls.keyFile go together: set both (a certificate of your own) or neither (the agent issues one from the gateway CA)',
        });
      }),
  })
  .refine((h) => h.headersTimeoutMs <= h.requestTimeoutMs, { path: ['requestTimeoutMs'], message: 'must be at least http.headersTimeoutMs' })
  .refine((h) => h.tls.enabled || isLoopbackHost(h.host), {
    path: ['host'],
    message: 'not a loopback address: the API and its tokens would cross the network in clear text; set http.tls.enabled: true (or http.host: 127.0.0.1)',
  });

export type PolicyRule = z.infer<typeof policyRule>;
export type PolicyAction = z.infer<typeof policyAction>;

export const configSchema = z.strictObject({
  agent: z.strictObject({
    id: restart(
      z.string().regex(DEVICE_ID_PATTERN).describe('gateway id: 1 to 64 characters from A-Z a-z 0-9 . _ -, not "." or ".."; defaults to the host name'),
    ),
    dataDir: restart(z.string().min(1).describe('directory for the database and all state; relative paths start at the working directory')),
    heartbeatIntervalMs: int(100, 3_600_000, 'how often the agent records that it is alive, in milliseconds'),
  }),
  log: z.strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).describe('one of fatal, error, warn, info, debug, trace'),
    pretty: restart(z.boolean().describe('true for human-readable colour logs instead of JSON (also --pretty)')),
  }),
  store: restart(
    z.strictObject({
      path: z.string().describe('SQLite database file; empty means <agent.dataDir>/edge-agent.db'),
      busyTimeoutMs: int(0, 600_000, 'how long a write waits for a lock held by another process (such as a backup), in milliseconds'),
      journalSizeLimitBytes: int(0, 2 ** 31 - 1, 'size the WAL file is truncated to after a checkpoint, in bytes'),
      integrityCheck: z
        .enum(['quick', 'full', 'off'])
        .describe('check run on the database at start: quick (PRAGMA quick_check), full (PRAGMA integrity_check) or off'),
    }),
  ),
  http: restart(httpSchema),
  auth: authSchema,
  ca: z.strictObject({
    dir: restart(z.string().describe('directory of the CA certificates and keys; empty means <agent.dataDir>/ca')),
    autoInit: restart(
      z.boolean().describe('create the CA hierarchy at the first start if the directory holds none (false when chaining to an enterprise PKI)'),
    ),
    organization: restart(z.string().min(1).max(64).describe('O= of the CA and of every certificate it issues (1 to 64 characters)')),
    passphrase: restart(z.string().describe('passphrase of the CA keys; prefer EDGE_AGENT_CA_PASSPHRASE or passphraseFile over writing it here')),
    passphraseFile: restart(z.string().describe('file holding the CA key passphrase (first line); under systemd, LoadCredential= as ca-passphrase also works')),
    rootKeyType: restart(keyType.describe('key of the root CA: ec-p256, ec-p384, rsa-2048, rsa-3072 or rsa-4096')),
    issuingKeyType: restart(keyType.describe('key of the issuing CA for MQTT devices and EC requesters')),
    rsaIssuingKeyType: restart(
      z
        .enum(['rsa-2048', 'rsa-3072', 'rsa-4096'])
        .describe('key of the RSA issuing CA (OPC UA applications and RSA requesters): rsa-2048, rsa-3072 or rsa-4096'),
    ),
    rootValidityDays: restart(int(1, 36_500, 'validity of the root CA in days')),
    issuingValidityDays: restart(int(1, 36_500, 'validity of the issuing CAs in days (never past the root)')),
    validityDays: z
      .strictObject({
        mqttDevice: int(1, 3_650, 'validity of MQTT device certificates in days'),
        opcuaApplication: int(1, 3_650, 'validity of OPC UA application certificates in days'),
        brokerServer: int(1, 3_650, 'validity of the broker server certificate in days'),
        agentClient: int(1, 3_650, 'validity of the agent client certificate in days'),
      })
      .describe('validity per profile in days (never past the issuing CA)'),
    allowKeyReuse: z.boolean().describe('whether a renewal may keep the key of the certificate it replaces'),
    crlFile: restart(z.string().describe("where the CRLs (PEM, one per issuing CA, then the root's) are written; empty means <ca.dir>/crl.pem")),
    crlValidityHours: int(1, 8_760, 'nextUpdate of each CRL, in hours; it is regenerated at half of that and on every revocation'),
    rootCrlValidityDays: int(
      1,
      3_650,
      'nextUpdate of the root CRL (which lists revoked issuing CAs), in days; signed again at half of that while the root key is on the gateway',
    ),
    expiryCheckIntervalMs: int(1_000, 86_400_000, 'how often certificates past two thirds of their lifetime are looked for, in milliseconds'),
  }),
  mqtt: mqttSchema,
  opcua: opcuaSchema,
  sync: syncSchema,
  configuration: configurationSchema,
  report: reportSchema,
  lifecycle: z.strictObject({
    startTimeoutMs: int(100, 600_000, 'time each service may take to start, in milliseconds'),
    stopTimeoutMs: int(100, 600_000, 'time each service may take to stop before it is abandoned, in milliseconds'),
  }),
});

export type Config = z.infer<typeof configSchema>;

/** The host name made into a valid gateway id. */
export function defaultAgentId(host: string = hostname()): string {
  const cleaned = host.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64);
  return DEVICE_ID_PATTERN.test(cleaned) ? cleaned : 'edge-gateway';
}

/** Embedded defaults: what `npm start` runs with when the file sets nothing. */
export function defaultConfig(): Config {
  return {
    agent: { id: defaultAgentId(), dataDir: './data', heartbeatIntervalMs: 30_000 },
    log: { level: 'info', pretty: false },
    store: { path: '', busyTimeoutMs: 5_000, journalSizeLimitBytes: 64 * 1024 * 1024, integrityCheck: 'quick' },
    http: {
      host: '127.0.0.1',
      port: 8470,
      names: [],
      maxConnections: 256,
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      keepAliveTimeoutMs: 5_000,
      tls: { enabled: false, certFile: '', keyFile: '', ciphers: [...STRONG_CIPHERS] },
    },
    auth: defaultAuthConfig(),
    ca: {
      dir: '',
      autoInit: true,
      organization: 'Edge Agent',
      passphrase: '',
      passphraseFile: '',
      rootKeyType: 'ec-p256',
      issuingKeyType: 'ec-p256',
      rsaIssuingKeyType: 'rsa-2048',
      rootValidityDays: 7_300,
      issuingValidityDays: 3_650,
      validityDays: { mqttDevice: 365, opcuaApplication: 730, brokerServer: 365, agentClient: 365 },
      allowKeyReuse: false,
      crlFile: '',
      crlValidityHours: 168,
      rootCrlValidityDays: 90,
      expiryCheckIntervalMs: 3_600_000,
    },
    mqtt: {
      enabled: true,
      topicPrefix: 'edge/prov/v1',
      brokerUrl: '',
      deviceBrokerUrl: '',
      listenHost: '127.0.0.1',
      provisioningPort: 8883,
      provisioningTls: true,
      mtlsPort: 8884,
      maxPayloadBytes: 16_384,
      mosquittoDir: '',
      mosquittoPidFile: '',
      mosquittoReloadCommand: '',
      limits: { perDeviceBurst: 3, perDeviceIntervalMs: 10_000, globalPerSecond: 1_000, queueSize: 5_000, workers: 128, maxPending: 1_000 },
      policy: { rules: [{ kind: 'token', action: 'approve' }], default: 'hold', renewal: 'hold' },
      discovery: { sparkplug: true, homie: true, homeAssistant: true },
      actionPollMs: 500,
    },
    opcua: {
      enabled: true,
      endpoints: [],
      discoveryServers: [],
      scan: { ranges: [], ports: [4840], concurrency: 64, maxAddresses: 65_536 },
      timeoutMs: 5_000,
      runOnStart: false,
      intervalMs: 0,
      mdns: { enabled: false, interface: '', listenMs: 3_000 },
      push: {
        enabled: true,
        approve: [],
        securityAdmins: [],
        concurrency: 4,
        stepTimeoutMs: 15_000,
        applyWaitMs: 30_000,
        retryInitialMs: 30_000,
        retryMaxMs: 3_600_000,
      },
    },
    sync: {
      enabled: false,
      baseUrl: '',
      gatewayId: '',
      caFile: '',
      tokenFile: '',
      clientCertificate: false,
      batchSize: 500,
      batchMaxBytes: 4_194_304,
      timeoutMs: 30_000,
      retryInitialMs: 1_000,
      retryMaxMs: 300_000,
      idleMs: 1_000,
      reconcileOnStart: true,
      reconcileIntervalMs: 3_600_000,
      splitAfterServerErrors: 5,
      stuckAfterMs: 900_000,
      location: { site: '', area: '', line: '', cell: '' },
    },
    configuration: defaultConfigurationConfig(),
    report: defaultReportConfig(),
    lifecycle: { startTimeoutMs: 30_000, stopTimeoutMs: 5_000 },
  };
}
