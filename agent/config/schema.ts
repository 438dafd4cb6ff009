import { hostname } from 'node:os';
import { z } from 'zod';

/**
 * The one schema of the configuration file. The TypeScript type `Config` is
 * inferred from it; defaults live in `defaultConfig()` and are merged in
 * before validation, so the schema only validates and never fills in.
 * Every object is strict: an unknown key is an error, not a silent no-op.
 * Each `describe()` text is shown as the hint when that key is wrong.
 */
const int = (min: number, max: number, what: string) =>
  z.number().int().min(min).max(max).describe(`${what} (whole number, ${min} to ${max})`);

const keyType = z.enum(['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096']);

export const DEVICE_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

export const configSchema = z.strictObject({
  agent: z.strictObject({
    id: z
      .string()
      .regex(DEVICE_ID_PATTERN)
      .describe('gateway id: 1 to 64 characters from A-Z a-z 0-9 . _ -; defaults to the host name'),
    dataDir: z.string().min(1).describe('directory for the database and all state; relative paths start at the working directory'),
    heartbeatIntervalMs: int(100, 3_600_000, 'how often the agent records that it is alive, in milliseconds'),
  }),
  log: z.strictObject({
    level: z
      .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace'])
      .describe('one of fatal, error, warn, info, debug, trace'),
    pretty: z.boolean().describe('true for human-readable colour logs instead of JSON (also --pretty)'),
  }),
  store: z.strictObject({
    path: z.string().describe('SQLite database file; empty means <agent.dataDir>/edge-agent.db'),
    busyTimeoutMs: int(0, 600_000, 'how long a write waits for a lock held by another process (such as a backup), in milliseconds'),
    journalSizeLimitBytes: int(0, 2 ** 31 - 1, 'size the WAL file is truncated to after a checkpoint, in bytes'),
    integrityCheck: z
      .enum(['quick', 'full', 'off'])
      .describe('check run on the database at start: quick (PRAGMA quick_check), full (PRAGMA integrity_check) or off'),
  }),
  http: z.strictObject({
    host: z
      .string()
      .min(1)
      .describe('address of the local listener for /healthz, /readyz, /metrics; keep 127.0.0.1 unless the network is trusted'),
    port: int(0, 65_535, 'TCP port of the local listener; 0 picks a free port and logs it'),
  }),
  ca: z.strictObject({
    dir: z.string().describe('directory of the CA certificates and keys; empty means <agent.dataDir>/ca'),
    autoInit: z.boolean().describe('create the CA hierarchy at the first start if the directory holds none (false when chaining to an enterprise PKI)'),
    organization: z.string().min(1).max(64).describe('O= of the CA and of every certificate it issues (1 to 64 characters)'),
    passphrase: z.string().describe('passphrase of the CA keys; prefer EDGE_AGENT_CA_PASSPHRASE or passphraseFile over writing it here'),
    passphraseFile: z.string().describe('file holding the CA key passphrase (first line); under systemd, LoadCredential= as ca-passphrase also works'),
    rootKeyType: keyType.describe('key of the root CA: ec-p256, ec-p384, rsa-2048, rsa-3072 or rsa-4096'),
    issuingKeyType: keyType.describe('key of the issuing CA for MQTT devices and EC requesters'),
    rsaIssuingKeyType: z.enum(['rsa-2048', 'rsa-3072', 'rsa-4096']).describe('key of the RSA issuing CA (OPC UA applications and RSA requesters): rsa-2048, rsa-3072 or rsa-4096'),
    rootValidityDays: int(1, 36_500, 'validity of the root CA in days'),
    issuingValidityDays: int(1, 36_500, 'validity of the issuing CAs in days (never past the root)'),
    validityDays: z
      .strictObject({
        mqttDevice: int(1, 3_650, 'validity of MQTT device certificates in days'),
        opcuaApplication: int(1, 3_650, 'validity of OPC UA application certificates in days'),
        brokerServer: int(1, 3_650, 'validity of the broker server certificate in days'),
        agentClient: int(1, 3_650, 'validity of the agent client certificate in days'),
      })
      .describe('validity per profile in days (never past the issuing CA)'),
    allowKeyReuse: z.boolean().describe('whether a renewal may keep the key of the certificate it replaces'),
    crlFile: z.string().describe('where the CRL (PEM, one per issuing CA) is written; empty means <ca.dir>/crl.pem'),
    crlValidityHours: int(1, 8_760, 'nextUpdate of each CRL, in hours; it is regenerated at half of that and on every revocation'),
    expiryCheckIntervalMs: int(1_000, 86_400_000, 'how often certificates past two thirds of their lifetime are looked for, in milliseconds'),
  }),
  lifecycle: z.strictObject({
    startTimeoutMs: int(100, 600_000, 'time each service may take to start, in milliseconds'),
    stopTimeoutMs: int(100, 600_000, 'time each service may take to stop before it is abandoned, in milliseconds'),
  }),
});

export type Config = z.infer<typeof configSchema>;

/** The host name made into a valid gateway id. */
export function defaultAgentId(host: string = hostname()): string {
  const cleaned = host.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64);
  return cleaned.length > 0 ? cleaned : 'edge-gateway';
}

/** Embedded defaults: what `npm start` runs with when the file sets nothing. */
export function defaultConfig(): Config {
  return {
    agent: { id: defaultAgentId(), dataDir: './data', heartbeatIntervalMs: 30_000 },
    log: { level: 'info', pretty: false },
    store: { path: '', busyTimeoutMs: 5_000, journalSizeLimitBytes: 64 * 1024 * 1024, integrityCheck: 'quick' },
    http: { host: '127.0.0.1', port: 8470 },
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
      expiryCheckIntervalMs: 3_600_000,
    },
    lifecycle: { startTimeoutMs: 30_000, stopTimeoutMs: 5_000 },
  };
}

/**
 * Keys whose change needs a restart: SIGHUP refuses a reload that touches
 * them (prefix match on the dotted path).
 */
export const RESTART_ONLY_KEYS: readonly string[] = [
  'agent.id',
  'agent.dataDir',
  'store',
  'http',
  'log.pretty',
  'ca.dir',
  'ca.autoInit',
  'ca.organization',
  'ca.passphrase',
  'ca.passphraseFile',
  'ca.rootKeyType',
  'ca.issuingKeyType',
  'ca.rsaIssuingKeyType',
  'ca.rootValidityDays',
  'ca.issuingValidityDays',
  'ca.crlFile',
];
