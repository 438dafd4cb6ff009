import type { CertErrorCode } from '../certs/errors.js';

/**
 * Process exit codes (documented in docs/operations.md). Values follow
 * sysexits(3) so that a systemd unit can list the ones a restart will not fix
 * in `RestartPreventExitStatus=`.
 */
export const ExitCode = {
  ok: 0,
  /** A service failed at start or at run time; a restart may help. */
  failure: 1,
  /** Bad command line. */
  usage: 64,
  /** The database is corrupt or newer than this build: a restart will not help. */
  dataError: 65,
  /** The database a command works on does not exist (EX_NOINPUT). */
  noInput: 66,
  /** The command needs the running daemon (its API cannot be reached, or the database awaits its migration). */
  unavailable: 69,
  /** The API refused the token (401) or the role (403); or this user may not read the database. */
  noPermission: 77,
  /** The configuration is invalid: a restart will not help. */
  config: 78,
  /** A second SIGTERM/SIGINT cut a graceful stop short. */
  forced: 130,
} as const;

/**
 * What one error code becomes at each edge: the HTTP status the API answers
 * it with, the exit code of a command it ends, and (`startExit`, when it
 * differs) the daemon's exit code when it stops the start: a CA that cannot
 * be used is a command's failure (1) but, at start, a setup problem no
 * restart fixes (78, so systemd's RestartPreventExitStatus holds it).
 */
export interface ErrorRow {
  http: number;
  exit: number;
  startExit?: number;
  /** What the code means, for docs/operations.md (its test compares the two). */
  title: string;
}

const { failure, usage, dataError, noInput, unavailable, noPermission, config } = ExitCode;
const row = (http: number, exit: number, title: string, startExit?: number): ErrorRow => ({
  http,
  exit,
  title,
  ...(startExit === undefined ? {} : { startExit }),
});

/**
 * The codes the local API answers with (`{ code, message }`). A command maps
 * an answer to its exit code by these rows; rows of one status share an exit
 * code, so an answer with a code this build does not know (another
 * version's, a proxy's) is mapped by its status (exitForAnswer).
 */
export const API_ERRORS = {
  BAD_REQUEST: row(400, usage, 'a body field is missing, unknown or out of range'),
  BAD_JSON: row(400, usage, 'the body is not valid JSON'),
  BAD_QUERY: row(400, usage, 'a query parameter is unknown, repeated or out of range'),
  TARGET_NOT_ALLOWED: row(400, usage, 'a discovery target outside what the configuration allows'),
  HTTPS_REQUIRED: row(400, usage, 'plain HTTP on the HTTPS listener'),
  // Device configuration (issue 17, CORE).
  PROFILE_INVALID: row(400, usage, 'a configuration profile document that fails its checks (every problem listed with its path); nothing stored'),
  UNAUTHENTICATED: row(401, noPermission, 'no valid token'),
  LOGIN_FAILED: row(401, noPermission, 'the directory does not know that user name with that password'),
  FORBIDDEN: row(403, noPermission, "the user's role may not do this"),
  CSRF_FAILED: row(403, noPermission, "a change sent with the console's cookie without its CSRF token, or from another origin"),
  NO_ACCESS: row(
    403,
    noPermission,
    "the directory user may not use the gateway (no mapped group, a contractor past their end date, disabled on this gateway, a local user's name)",
  ),
  NOT_FOUND: row(404, usage, 'no such route'),
  NO_SUCH_DEVICE: row(404, usage, 'no such device'),
  NO_SUCH_RUN: row(404, usage, 'no such discovery run'),
  NO_SUCH_CERTIFICATE: row(404, usage, 'no certificate with that serial'),
  NO_SUCH_USER: row(404, usage, 'no such user'),
  NO_SUCH_TOKEN: row(404, usage, 'no such API token'),
  NO_SUCH_ENROLLMENT_TOKEN: row(404, usage, 'no such enrollment token'),
  NO_SUCH_PROFILE: row(404, usage, 'no configuration profile of that name, or no such version of it'),
  DIRECTORY_OFF: row(404, usage, 'directory logins are not configured (auth.directory)'),
  NO_SESSION: row(404, usage, 'the token is not a session (a session ends with DELETE /api/v1/session)'),
  METHOD_NOT_ALLOWED: row(405, failure, 'the route does not take this method'),
  REFUSED: row(409, failure, 'understood and declined (a decision that does not apply)'),
  ALREADY_REVOKED: row(409, failure, 'the certificate or enrollment token is already revoked'),
  DECOMMISSIONED: row(409, failure, 'the device is decommissioned: its record is final'),
  SYNC_OFF: row(409, failure, 'sync is off in the configuration'),
  CONFIGURATION_OFF: row(409, failure, 'device configuration is off in the configuration (configuration.enabled)'),
  PROTOCOL_OFF: row(409, failure, 'the protocol is off in the configuration'),
  RUN_ENDED: row(409, failure, 'the discovery run has already ended'),
  USER_EXISTS: row(409, failure, 'a user of that name exists'),
  SELF: row(409, failure, 'an administrator may not disable their own account'),
  USER_DISABLED: row(409, failure, 'the user is disabled'),
  BODY_TOO_LARGE: row(413, usage, 'the request body is over the cap'),
  UNSUPPORTED_MEDIA_TYPE: row(415, failure, 'a body that is not application/json'),
  HOST_NOT_ALLOWED: row(421, failure, 'the Host header does not name the listener'),
  TOO_MANY_FAILURES: row(429, noPermission, 'too many failed authentications: answered late'),
  TOO_MANY_STREAMS: row(429, noPermission, 'too many progress streams open'),
  TOO_MANY_LOGINS: row(429, noPermission, 'too many failed logins for that user name or from that address, or too many logins at once: answered late'),
  INTERNAL: row(500, failure, 'an unexpected error: see the agent log'),
  CONSOLE_NOT_BUILT: row(503, failure, 'the web console is not built (npm run build)'),
  CA_NOT_READY: row(503, failure, 'the CA is not loaded, or no CRL is published yet'),
  DIRECTORY_UNAVAILABLE: row(503, failure, 'the directory cannot be reached or did not answer in time'),
  DIRECTORY_CERTIFICATE: row(503, failure, "the directory's certificate is not trusted (auth.directory.caFile) or does not name its address"),
} as const satisfies Record<string, ErrorRow>;

/** The codes of the agent's own errors (AgentError subclasses), raised in the daemon and the commands. */
export const AGENT_ERRORS = {
  USAGE: row(400, usage, 'bad command line'),
  CONFIG_INVALID: row(500, config, 'the configuration is invalid (every problem listed)'),
  CONFIG_FILE_UNUSABLE: row(500, config, 'a file the configuration names cannot be used'),
  STORE_CORRUPT: row(500, dataError, 'the database is corrupt'),
  STORE_TOO_NEW: row(500, dataError, 'the database was written by a newer agent'),
  STORE_OPEN_FAILED: row(500, failure, 'the database cannot be opened'),
  STORE_MISSING: row(503, noInput, 'the database does not exist'),
  STORE_ACCESS_DENIED: row(500, noPermission, 'this user may not read the database'),
  STORE_NOT_MIGRATED: row(503, unavailable, 'the database awaits the migration the daemon makes at its start'),
  SERVICE_START_FAILED: row(500, failure, "a service failed at start (the daemon exits with its cause's code)"),
  INSTANCE_LOCKED: row(409, failure, 'another agent holds the data directory'),
  BACKUP_FAILED: row(500, failure, 'the backup could not be written'),
  TIMEOUT: row(504, failure, 'no answer in the time given'),
  INVALID_TRANSITION: row(409, failure, "a change the device's state machine does not allow"),
  CA_PASSPHRASE_UNREADABLE: row(500, failure, 'the CA passphrase file or credential cannot be read', config),
  UPSTREAM_UNREACHABLE: row(502, failure, 'the upstream receiver did not answer'),
  OPCUA_CHANNEL_REFUSED: row(502, failure, 'an OPC UA server refused the secure channel'),
  OPCUA_PUSH_STEP_FAILED: row(502, failure, 'a step of an OPC UA push failed (retried with backoff)'),
  OPCUA_SERVER_ERROR: row(502, failure, 'an OPC UA server answered in a way the agent cannot use'),
  BROKER_UNAVAILABLE: row(502, failure, 'the MQTT broker is not connected, or refused a message'),
  UPSTREAM_ANSWER_INVALID: row(502, failure, "the upstream receiver's answer does not follow the contract"),
  MOSQUITTO_RELOAD_FAILED: row(500, failure, 'Mosquitto could not be told to reload its files'),
  LISTEN_FAILED: row(500, failure, 'the HTTP listener cannot bind its address'),
  RANGE_INVALID: row(400, usage, 'not an IPv4 address or CIDR range, or more addresses than opcua.scan.maxAddresses'),
  DAEMON_UNAVAILABLE: row(503, unavailable, "the daemon's API does not answer (a request that may have been received: 1)"),
  NO_TOKEN: row(401, noPermission, 'no API token to call the daemon with'),
  API_ERROR: row(502, failure, "the API answered an error (the command exits with the answer's code)"),
  // An MQTT enrollment request the agent cannot read (rejected on the reply topic).
  NOT_JSON: row(400, usage, 'an enrollment request, or an API answer, that is not JSON'),
  TOO_DEEP: row(400, usage, 'an enrollment request nested too deeply'),
  PROTOTYPE_KEY: row(400, usage, 'an enrollment request with a forbidden key'),
  INVALID: row(400, usage, 'an enrollment request that does not match its schema'),
  // A message on an announcement topic that cannot be used (discovery logs it).
  TOO_LARGE: row(413, usage, 'an announcement over the size limit'),
  MALFORMED: row(400, usage, 'an announcement payload that cannot be read'),
  BAD_ID: row(400, usage, 'an announcement topic with an id that cannot be used'),
} as const satisfies Record<string, ErrorRow>;

const ca = (title: string, http = 500) => row(http, failure, title, config);

/** The certificate library's codes (certs/errors.ts): certs/ imports nothing from agent/, so they are mapped here by code. */
export const CERT_ERRORS: Record<CertErrorCode, ErrorRow> = {
  PEM_INVALID: row(400, failure, 'not PEM'),
  CSR_MALFORMED: row(400, failure, 'the CSR cannot be read'),
  CSR_TOO_LARGE: row(413, failure, 'the CSR is over the size limit'),
  CSR_SIGNATURE_INVALID: row(400, failure, 'the CSR signature does not verify'),
  CSR_SIGNATURE_ALGORITHM_UNSUPPORTED: row(400, failure, 'the CSR is signed with an algorithm the CA does not take'),
  KEY_TOO_WEAK: row(400, failure, 'the key is too weak'),
  KEY_TYPE_UNSUPPORTED: row(400, failure, 'a key type the CA does not take'),
  KEY_TYPE_NOT_ALLOWED: row(400, failure, 'a key type the profile does not allow'),
  NAME_INVALID: row(400, failure, 'a name the profile does not allow'),
  CSR_REQUESTS_CA: row(400, failure, 'the CSR asks to be a CA'),
  KEY_BOUND_TO_OTHER_IDENTITY: row(409, failure, 'the key belongs to another identity'),
  KEY_REUSE_NOT_ALLOWED: row(409, failure, 'a renewal must use a new key'),
  KEY_COMPROMISED: row(409, failure, 'the key was revoked as compromised'),
  CONCURRENT_REQUEST: row(409, failure, 'another request for the identity is in progress'),
  PROFILE_UNKNOWN: row(400, failure, 'no such certificate profile'),
  REQUEST_INVALID: row(400, failure, 'the issuance request is invalid'),
  LINT_FAILED: row(500, failure, 'the certificate built failed its lint'),
  SERIAL_COLLISION: row(500, failure, 'a serial number collided'),
  CA_NOT_INITIALISED: ca('the CA has not been created (edge-agent ca init)', 503),
  CA_ALREADY_INITIALISED: row(409, failure, 'the CA exists already'),
  CA_KEY_PERMISSIONS: ca('a CA key file is readable by others'),
  CA_KEY_MISMATCH: ca('a CA key does not match its certificate'),
  CA_KEY_DAMAGED: ca('a CA key file cannot be read'),
  CA_PASSPHRASE_WRONG: ca('the CA passphrase is wrong'),
  CA_PASSPHRASE_MISSING: ca('the CA keys are encrypted and no passphrase is configured'),
  CA_EXPIRED: row(503, failure, 'the issuing CA has expired'),
  INTERMEDIATE_INVALID: row(400, failure, 'the imported intermediate cannot be used'),
  CA_ROOT_KEY_OFFLINE: row(409, failure, 'the root key is offline (an enterprise root)'),
  CA_NOT_LOCAL: row(409, failure, 'the CA is not run by this agent'),
  ISSUING_CA_REVOKED: ca('the issuing CA has been revoked'),
  CERT_NOT_FOUND: row(404, failure, 'no such certificate'),
  CERT_ALREADY_REVOKED: row(409, failure, 'the certificate is already revoked'),
  CRL_NOT_WRITTEN: row(500, failure, 'the CRL could not be written'),
};

/** Every code the agent raises or answers with, and what it becomes at each edge. */
export const ERROR_TABLE = { ...API_ERRORS, ...AGENT_ERRORS, ...CERT_ERRORS } as const;

export type ApiErrorCode = keyof typeof API_ERRORS;
export type ErrorCode = keyof typeof ERROR_TABLE;
