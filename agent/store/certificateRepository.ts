import { CertError } from '../../certs/errors.js';
import type { ProfileName } from '../../certs/profiles/profile.js';
import type { CertificateRecord, CertificateStore, ListFilter, RevocationReason, RevokedEntry } from '../../certs/store.js';
import type BetterSqlite3 from 'better-sqlite3';
import type { Store } from './database.js';

interface Row {
  serial: string;
  issuer: 'ec' | 'rsa';
  profile: ProfileName;
  identity: string;
  subject: string;
  san: string;
  not_before: string;
  not_after: string;
  thumbprint: string;
  spki_sha256: string;
  pem: string;
  status: CertificateRecord['status'];
  issued_at: string;
  revoked_at: string | null;
  revocation_reason: RevocationReason | null;
  superseded_by: string | null;
}

const toRecord = (r: Row): CertificateRecord => ({
  serial: r.serial,
  issuer: r.issuer,
  profile: r.profile,
  identity: r.identity,
  subject: r.subject,
  san: r.san,
  notBefore: new Date(r.not_before),
  notAfter: new Date(r.not_after),
  thumbprint: r.thumbprint,
  spkiSha256: r.spki_sha256,
  pem: r.pem,
  status: r.status,
  issuedAt: new Date(r.issued_at),
  ...(r.revoked_at ? { revokedAt: new Date(r.revoked_at) } : {}),
  ...(r.revocation_reason ? { revocationReason: r.revocation_reason } : {}),
  ...(r.superseded_by ? { supersededBy: r.superseded_by } : {}),
});

type Outcome = { supersedes?: string; repeated?: CertificateRecord };

interface Pending {
  record: CertificateRecord;
  policy: { allowKeyReuse: boolean; renew: boolean };
  alongside: ((record: CertificateRecord) => void) | undefined;
  resolve: (result: Outcome) => void;
  reject: (err: unknown) => void;
}

/**
 * The CA's storage on SQLite. `record()` groups every issuance that arrives
 * in the same turn of the event loop into one durable (fsynced) commit:
 * durability is kept without paying one fsync per certificate. Each
 * certificate is written with its caller's `alongside` work (the outcome of
 * the request it answers) in a savepoint of that commit: both or neither.
 */
export class CertificateRepository implements CertificateStore {
  private queue: Pending[] = [];
  private flushScheduled = false;
  /** A savepoint around one record and its alongside work: made once (better-sqlite3 builds five functions per transaction()). */
  private readonly savepoint: (run: () => Outcome) => Outcome;

  constructor(private readonly store: Store) {
    this.savepoint = store.db.transaction((run: () => Outcome) => run());
  }

  private get db() {
    return this.store.db;
  }

  private sql(text: string): BetterSqlite3.Statement {
    return this.store.statement(text);
  }

  keyBinding(spkiSha256: string): { identity: string; profile: ProfileName } | undefined {
    return this.sql('SELECT identity, profile FROM key_bindings WHERE spki_sha256 = ?').get(spkiSha256) as
      | { identity: string; profile: ProfileName }
      | undefined;
  }

  current(profile: ProfileName, identity: string): CertificateRecord | undefined {
    const row = this.sql("SELECT * FROM certificates WHERE profile = ? AND identity = ? AND status = 'valid'").get(profile, identity) as Row | undefined;
    return row ? toRecord(row) : undefined;
  }

  /** A certificate by the SHA-256 of its DER (any status). */
  byThumbprint(sha256: string): CertificateRecord | undefined {
    const row = this.sql('SELECT * FROM certificates WHERE thumbprint = ?').get(sha256.toLowerCase()) as Row | undefined;
    return row ? toRecord(row) : undefined;
  }

  keyCompromised(spkiSha256: string): boolean {
    return this.sql("SELECT 1 FROM certificates WHERE spki_sha256 = ? AND revocation_reason = 'keyCompromise' LIMIT 1").get(spkiSha256) !== undefined;
  }

  record(record: CertificateRecord, policy: { allowKeyReuse: boolean; renew: boolean }, alongside?: (record: CertificateRecord) => void): Promise<Outcome> {
    return new Promise((resolve, reject) => {
      this.queue.push({ record, policy, alongside, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  commit(work: () => void): void {
    this.store.durable(work);
  }

  /**
   * Commits every queued record in one durable transaction. A record that
   * fails its checks (clone, serial taken) is refused alone: the checks run
   * before any of its writes. Its `alongside` work runs in the same
   * savepoint: when it throws, the savepoint is rolled back and that record
   * alone is refused with its error. Any other error fails the whole batch,
   * and nothing of it is committed.
   */
  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queue.splice(0);
    const outcomes: ({ ok: Outcome } | { refused: unknown })[] = [];
    try {
      this.store.durable(() => {
        const written = new Set<string>();
        for (const item of batch) {
          let refused: { refused: unknown } | undefined;
          // A nested better-sqlite3 transaction is a savepoint: throwing out of it undoes only this item.
          // Without alongside work none is needed: insert() writes nothing before its checks pass.
          const run = () => {
            let outcome: Outcome;
            try {
              outcome = this.insert(item.record, item.policy, written);
            } catch (err) {
              if (!(err instanceof CertError)) throw err;
              throw (refused = { refused: err });
            }
            try {
              item.alongside?.(outcome.repeated ?? item.record);
            } catch (err) {
              throw (refused = { refused: err });
            }
            return outcome;
          };
          try {
            outcomes.push({ ok: item.alongside ? this.savepoint(run) : run() });
          } catch (err) {
            if (refused === undefined) throw err;
            written.delete(item.record.serial); // rolled back with its savepoint
            outcomes.push(refused);
          }
        }
      });
    } catch (err) {
      for (const item of batch) item.reject(err);
      return;
    }
    batch.forEach((item, i) => {
      const outcome = outcomes[i]!;
      if ('ok' in outcome) item.resolve(outcome.ok);
      else item.reject(outcome.refused);
    });
  }

  /**
   * Checks, then writes one record. Every check runs before the first write,
   * so a refused record leaves nothing in the transaction.
   */
  private insert(r: CertificateRecord, policy: { allowKeyReuse: boolean; renew: boolean }, written: Set<string>): Outcome {
    if (this.keyCompromised(r.spkiSha256)) {
      throw new CertError('KEY_COMPROMISED', 'a certificate for this public key was revoked for key compromise; the device needs a new key pair');
    }
    const bound = this.keyBinding(r.spkiSha256);
    if (bound && bound.identity !== r.identity) {
      throw new CertError(
        'KEY_BOUND_TO_OTHER_IDENTITY',
        `clone alert: this public key is already bound to ${bound.profile} identity ${JSON.stringify(bound.identity)}`,
      );
    }
    const current = this.sql(
      "SELECT serial, spki_sha256, subject, san, not_after FROM certificates WHERE profile = ? AND identity = ? AND status = 'valid'",
    ).get(r.profile, r.identity) as { serial: string; spki_sha256: string; subject: string; san: string; not_after: string } | undefined;
    if (bound) {
      // A twin committed moments ago (same batch or just before): answer with it instead of a second certificate.
      if (
        current &&
        current.spki_sha256 === r.spkiSha256 &&
        current.subject === r.subject &&
        current.san === r.san &&
        !policy.renew &&
        current.not_after > r.issuedAt.toISOString()
      ) {
        return { repeated: this.get(current.serial)! };
      }
      if (!policy.allowKeyReuse) {
        throw new CertError(
          'KEY_REUSE_NOT_ALLOWED',
          `identity ${JSON.stringify(r.identity)} already had a certificate for this key; a new certificate needs a new key pair`,
        );
      }
    }
    if (current && written.has(current.serial)) {
      // Two different requests for one identity in the same commit: the first wins; the second would
      // be handed a certificate already superseded.
      throw new CertError(
        'CONCURRENT_REQUEST',
        `another request for ${r.profile} identity ${JSON.stringify(r.identity)} was committed at the same moment; send it again`,
      );
    }
    if (this.sql('SELECT 1 FROM certificates WHERE serial = ?').get(r.serial)) {
      throw new CertError('SERIAL_COLLISION', `serial ${r.serial} is already taken`);
    }
    if (!bound) {
      this.sql('INSERT INTO key_bindings (spki_sha256, identity, profile, bound_at) VALUES (?, ?, ?, ?)').run(
        r.spkiSha256,
        r.identity,
        r.profile,
        r.issuedAt.toISOString(),
      );
    }
    // superseded_by points at the row inserted next: the foreign key is deferred to the commit.
    if (current) this.sql("UPDATE certificates SET status = 'superseded', superseded_by = ? WHERE serial = ?").run(r.serial, current.serial);
    const lifetime = r.notAfter.getTime() - r.notBefore.getTime();
    this.sql(
      `INSERT INTO certificates (serial, issuer, profile, identity, subject, san, not_before, not_after, renewal_due_at,
         thumbprint, spki_sha256, pem, status, issued_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'valid', ?)`,
    ).run(
      r.serial,
      r.issuer,
      r.profile,
      r.identity,
      r.subject,
      r.san,
      r.notBefore.toISOString(),
      r.notAfter.toISOString(),
      new Date(r.notBefore.getTime() + Math.floor((lifetime * 2) / 3)).toISOString(),
      r.thumbprint,
      r.spkiSha256,
      r.pem,
      r.issuedAt.toISOString(),
    );
    written.add(r.serial);
    return current ? { supersedes: current.serial } : {};
  }

  get(serial: string): CertificateRecord | undefined {
    const row = this.sql('SELECT * FROM certificates WHERE serial = ?').get(serial) as Row | undefined;
    return row ? toRecord(row) : undefined;
  }

  list(filter: ListFilter): CertificateRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.profile) where.push('profile = ?'), args.push(filter.profile);
    if (filter.identity) where.push('identity = ?'), args.push(filter.identity);
    if (filter.status) where.push('status = ?'), args.push(filter.status);
    if (filter.expiringBefore) where.push("status = 'valid' AND not_after < ?"), args.push(filter.expiringBefore.toISOString());
    const sql = `SELECT * FROM certificates ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY not_after, serial LIMIT ?`;
    return (this.db.prepare(sql).all(...args, filter.limit ?? 10_000) as Row[]).map(toRecord);
  }

  revoke(serial: string, reason: RevocationReason, at: Date): { revoked: CertificateRecord; alsoRevoked: CertificateRecord[] } {
    return this.store.durable(() => {
      const existing = this.get(serial);
      if (!existing) throw new CertError('CERT_NOT_FOUND', `no certificate with serial ${serial}`);
      if (existing.status === 'revoked')
        throw new CertError('CERT_ALREADY_REVOKED', `certificate ${serial} was already revoked on ${existing.revokedAt?.toISOString()}`);
      const mark = this.sql("UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ? WHERE serial = ?");
      mark.run(at.toISOString(), reason, serial);
      // A compromised key is compromised in every certificate that carries it.
      const siblings =
        reason === 'keyCompromise'
          ? (this.sql("SELECT serial FROM certificates WHERE spki_sha256 = ? AND status != 'revoked'").all(existing.spkiSha256) as { serial: string }[])
          : [];
      for (const s of siblings) mark.run(at.toISOString(), reason, s.serial);
      return { revoked: this.get(serial)!, alsoRevoked: siblings.map((s) => this.get(s.serial)!) };
    });
  }

  revokedBy(issuer: 'ec' | 'rsa', now: Date): RevokedEntry[] {
    const rows = this.db
      .prepare(
        "SELECT serial, revoked_at, revocation_reason FROM certificates WHERE issuer = ? AND status = 'revoked' AND not_after > ? ORDER BY revoked_at, serial",
      )
      .all(issuer, now.toISOString()) as { serial: string; revoked_at: string; revocation_reason: RevocationReason }[];
    return rows.map((r) => ({ serial: r.serial, revokedAt: new Date(r.revoked_at), reason: r.revocation_reason }));
  }

  nextCrlNumber(issuer: 'ec' | 'rsa'): number {
    return this.store.durable(() => {
      this.db
        .prepare('INSERT INTO crl_numbers (issuer, last_number) VALUES (?, 1) ON CONFLICT (issuer) DO UPDATE SET last_number = last_number + 1')
        .run(issuer);
      return (this.db.prepare('SELECT last_number FROM crl_numbers WHERE issuer = ?').get(issuer) as { last_number: number }).last_number;
    });
  }

  /** Valid certificates past two thirds of their lifetime that have not been announced yet; marks them announced. */
  takeRenewalDue(now: Date): CertificateRecord[] {
    return this.store.transaction(() => {
      const rows = this.db
        .prepare("SELECT * FROM certificates WHERE status = 'valid' AND renewal_notified_at IS NULL AND renewal_due_at <= ? ORDER BY renewal_due_at")
        .all(now.toISOString()) as Row[];
      const mark = this.db.prepare('UPDATE certificates SET renewal_notified_at = ? WHERE serial = ?');
      for (const r of rows) mark.run(now.toISOString(), r.serial);
      return rows.map(toRecord);
    });
  }

  /** Valid certificates past two thirds of their lifetime (for the gauge). */
  /**
   * Identities of a profile with a revoked certificate and no valid one:
   * exactly those a broker that had read the current CRL would refuse.
   */
  revokedIdentities(profile: ProfileName): string[] {
    const rows = this.db
      .prepare(
        `SELECT DISTINCT identity FROM certificates c WHERE profile = ? AND status = 'revoked'
           AND NOT EXISTS (SELECT 1 FROM certificates v WHERE v.profile = c.profile AND v.identity = c.identity AND v.status = 'valid')
         ORDER BY identity`,
      )
      .all(profile) as { identity: string }[];
    return rows.map((r) => r.identity);
  }

  /** Certificates still valid (not revoked nor superseded) whose end lies after `now`. */
  countValid(now: Date): number {
    return (this.db.prepare("SELECT count(*) AS n FROM certificates WHERE status = 'valid' AND not_after > ?").get(now.toISOString()) as { n: number }).n;
  }

  countRenewalDue(now: Date): number {
    return (this.db.prepare("SELECT count(*) AS n FROM certificates WHERE status = 'valid' AND renewal_due_at <= ?").get(now.toISOString()) as { n: number }).n;
  }
}
