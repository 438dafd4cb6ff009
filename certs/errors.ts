/**
 * Errors of the certificate library. `code` is stable: callers (the agent,
 * the CLI, the provisioning protocols) decide and report by it. The library
 * has its own error type so that it imports nothing from agent/.
 */
export type CertErrorCode =
  | 'PEM_INVALID'
  | 'CSR_MALFORMED'
  | 'CSR_TOO_LARGE'
  | 'CSR_SIGNATURE_INVALID'
  | 'CSR_SIGNATURE_ALGORITHM_UNSUPPORTED'
  | 'KEY_TOO_WEAK'
  | 'KEY_TYPE_UNSUPPORTED'
  | 'KEY_TYPE_NOT_ALLOWED'
  | 'NAME_INVALID'
  | 'CSR_REQUESTS_CA'
  | 'KEY_BOUND_TO_OTHER_IDENTITY'
  | 'KEY_REUSE_NOT_ALLOWED'
  | 'KEY_COMPROMISED'
  | 'CONCURRENT_REQUEST'
  | 'PROFILE_UNKNOWN'
  | 'REQUEST_INVALID'
  | 'LINT_FAILED'
  | 'SERIAL_COLLISION'
  | 'CA_NOT_INITIALISED'
  | 'CA_ALREADY_INITIALISED'
  | 'CA_KEY_PERMISSIONS'
  | 'CA_KEY_MISMATCH'
  | 'CA_KEY_DAMAGED'
  | 'CA_PASSPHRASE_WRONG'
  | 'CA_PASSPHRASE_MISSING'
  | 'CA_EXPIRED'
  | 'INTERMEDIATE_INVALID'
  | 'CA_ROOT_KEY_OFFLINE'
  | 'CA_NOT_LOCAL'
  | 'ISSUING_CA_REVOKED'
  | 'CERT_NOT_FOUND'
  | 'CERT_ALREADY_REVOKED'
  | 'CRL_NOT_WRITTEN';

export class CertError extends Error {
  constructor(
    readonly code: CertErrorCode,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CertError';
    this.details = options.details ?? {};
  }
  readonly details: Record<string, unknown>;
}
