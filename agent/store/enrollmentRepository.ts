import { createHash, randomBytes } from 'node:crypto';
import type BetterSqlite3 from 'better-sqlite3';
import type { Nameplate } from '../inventory/device.js';
import type { Store } from './database.js';

export type RequestStatus = 'pending' | 'approved' | 'issued' | 'rejected';

export interface EnrollmentRequest {
  deviceId: string;
  requestId: string;
  csrSha256: string;
  /** SHA-256 of the CSR's public key (hex). */
  spkiSha256: string;
  csr: string;
  nameplate: Nameplate;
  status: RequestStatus;
  reason: string;
  decidedBy?: string;
  tokenId?: string;
  certificateSerial?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  receivedAt: Date;
  decidedAt?: Date;
}

interface RequestRow {
  device_id: string;
  request_id: string;
  csr_sha256: string;
  spki_sha256: string;
  csr: string;
  nameplate: string;
  status: RequestStatus;
  reason: string;
  decided_by: string | null;
  token_id: string | null;
  certificate_serial: string | null;
  response_topic: string | null;
  correlation_data: Buffer | null;
  received_at: string;
  decided_at: string | null;
}

const toRequest = (r: RequestRow): EnrollmentRequest => ({
  deviceId: r.device_id,
  requestId: r.request_id,
  csrSha256: r.csr_sha256,
  spkiSha256: r.spki_sha256,
  csr: r.csr,
  nameplate: JSON.parse(r.nameplate) as Nameplate,
  status: r.status,
  reason: r.reason,
  ...(r.decided_by ? { decidedBy: r.decided_by } : {}),
  ...(r.token_id ? { tokenId: r.token_id } : {}),
  ...(r.certificate_serial ? { certificateSerial: r.certificate_serial } : {}),
  ...(r.response_topic ? { responseTopic: r.response_topic } : {}),
  ...(r.correlation_data ? { correlationData: r.correlation_data } : {}),
  receivedAt: new Date(r.received_at),
  ...(r.decided_at ? { decidedAt: new Date(r.decided_at) } : {}),
});

export interface TokenRecord {
  id: string;
  label: string;
  maxUses: number;
  uses: number;
  expiresAt: Date;
  createdAt: Date;
  revokedAt?: Date;
}

interface TokenRow {
  id: string;
  label: string;
  max_uses: number;
  uses: number;
  expires_at: string;
  created_at: string;
  revoked_at: string | null;
}

const toToken = (r: TokenRow): TokenRecord => ({
  id: r.id,
  label: r.label,
  maxUses: r.max_uses,
  uses: r.uses,
  expiresAt: new Date(r.expires_at),
  createdAt: new Date(r.created_at),
  ...(r.revoked_at ? { revokedAt: new Date(r.revoked_at) } : {}),
});

/** Tokens are 32 random bytes; an unsalted SHA-256 of that much entropy cannot be reversed. */
export const tokenHash = (token: string): string => createHash('sha256').update(token, 'utf8').digest('hex');

/** Enrollment requests with their answers, and enrollment tokens. */
export class EnrollmentRepository {
  constructor(private readonly store: Store) {}

  private sql(text: string): BetterSqlite3.Statement {
    return this.store.statement(text);
  }

  get(deviceId: string, requestId: string): EnrollmentRequest | undefined {
    const row = this.sql('SELECT * FROM enrollment_requests WHERE device_id = ? AND request_id = ?').get(deviceId, requestId) as RequestRow | undefined;
    return row ? toRequest(row) : undefined;
  }

  /** Requests in a given status, oldest first (approved ones are resumed at start). */
  withStatus(status: RequestStatus, deviceId?: string): EnrollmentRequest[] {
    const rows = this.sql(
      'SELECT * FROM enrollment_requests WHERE status = @status AND (@device IS NULL OR device_id = @device) ORDER BY received_at, rowid',
    ).all({ status, device: deviceId ?? null }) as RequestRow[];
    return rows.map(toRequest);
  }

  countWithStatus(status: RequestStatus): number {
    return (this.sql('SELECT count(*) AS n FROM enrollment_requests WHERE status = ?').get(status) as { n: number }).n;
  }

  /** Whether a request of this device with this id is on record. */
  has(deviceId: string, requestId: string): boolean {
    return this.sql('SELECT 1 FROM enrollment_requests WHERE device_id = ? AND request_id = ?').get(deviceId, requestId) !== undefined;
  }

  /** Records a request; returns it as recorded (decided when it arrived, unless pending). */
  insert(r: Omit<EnrollmentRequest, 'decidedAt'>): EnrollmentRequest {
    this.sql(
      `INSERT INTO enrollment_requests (device_id, request_id, csr_sha256, spki_sha256, csr, nameplate, status, reason, decided_by, token_id,
         certificate_serial, response_topic, correlation_data, received_at, decided_at)
       VALUES (@deviceId, @requestId, @csrSha256, @spkiSha256, @csr, @nameplate, @status, @reason, @decidedBy, @tokenId,
         @certificateSerial, @responseTopic, @correlationData, @receivedAt,
         CASE WHEN @status = 'pending' THEN NULL ELSE @receivedAt END)`,
    ).run({
      deviceId: r.deviceId,
      requestId: r.requestId,
      csrSha256: r.csrSha256,
      spkiSha256: r.spkiSha256,
      csr: r.csr,
      nameplate: JSON.stringify(r.nameplate),
      status: r.status,
      reason: r.reason,
      decidedBy: r.decidedBy ?? null,
      tokenId: r.tokenId ?? null,
      certificateSerial: r.certificateSerial ?? null,
      responseTopic: r.responseTopic ?? null,
      correlationData: r.correlationData ?? null,
      receivedAt: r.receivedAt.toISOString(),
    });
    return r.status === 'pending' ? { ...r } : { ...r, decidedAt: r.receivedAt };
  }

  decide(deviceId: string, requestId: string, status: RequestStatus, reason: string, decidedBy: string, certificateSerial?: string): void {
    this.sql(
      `UPDATE enrollment_requests SET status = ?, reason = ?, decided_by = ?, certificate_serial = coalesce(?, certificate_serial), decided_at = ?
       WHERE device_id = ? AND request_id = ?`,
    ).run(status, reason, decidedBy, certificateSerial ?? null, new Date().toISOString(), deviceId, requestId);
  }

  /** Creates a token; the secret is returned once and only its hash is stored. */
  createToken(label: string, maxUses: number, expiresAt: Date): { token: string; record: TokenRecord } {
    const token = randomBytes(32).toString('base64url');
    const id = randomBytes(6).toString('hex');
    const now = new Date();
    this.sql('INSERT INTO enrollment_tokens (id, token_sha256, label, max_uses, uses, expires_at, created_at) VALUES (?, ?, ?, ?, 0, ?, ?)').run(
      id,
      tokenHash(token),
      label,
      maxUses,
      expiresAt.toISOString(),
      now.toISOString(),
    );
    return { token, record: this.token(id)! };
  }

  token(id: string): TokenRecord | undefined {
    const row = this.sql('SELECT * FROM enrollment_tokens WHERE id = ?').get(id) as TokenRow | undefined;
    return row ? toToken(row) : undefined;
  }

  tokenBySecret(token: string): TokenRecord | undefined {
    const row = this.sql('SELECT * FROM enrollment_tokens WHERE token_sha256 = ?').get(tokenHash(token)) as TokenRow | undefined;
    return row ? toToken(row) : undefined;
  }

  tokens(): TokenRecord[] {
    return (this.sql('SELECT * FROM enrollment_tokens ORDER BY created_at').all() as TokenRow[]).map(toToken);
  }

  /** Counts one use; false when the token was used up, revoked or expired meanwhile (the caller's transaction then decides). */
  useToken(id: string, now: Date = new Date()): boolean {
    const info = this.sql('UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ? AND uses < max_uses AND revoked_at IS NULL AND expires_at > ?').run(
      id,
      now.toISOString(),
    );
    return info.changes === 1;
  }

  /** Gives back a use counted for a request the CA then refused. */
  releaseToken(id: string): void {
    this.sql('UPDATE enrollment_tokens SET uses = uses - 1 WHERE id = ? AND uses > 0').run(id);
  }

  revokeToken(id: string): boolean {
    return this.sql('UPDATE enrollment_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(new Date().toISOString(), id).changes === 1;
  }
}
