import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { CertificateAuthority } from '../../certs/authority.js';
import { initCa } from '../../certs/hierarchy.js';
import { IssuingCa } from '../../certs/issuer.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import { CertificateRepository } from '../../agent/store/certificateRepository.js';
import { Store } from '../../agent/store/database.js';

/** Requests issued at once: CSRs in flight, which share a durable commit. */
const CONCURRENCY = 64;

/**
 * The CA alone, as the `ca` bench measures it: CSRs through the whole
 * pipeline (parse, proof of possession, build, lint, sign, durable grouped
 * recording in SQLite), CONCURRENCY at a time, each batch of CSRs into a
 * fresh database, in this process. The `ca` bench uses it, and so does the
 * enrollment backlog row, between its backlogs, so that its ratio compares
 * figures measured minutes apart at most (this machine's speed drifts by a
 * fifth and more within a run).
 */
export class CaReference {
  readonly issuers: { ec: IssuingCa; rsa: IssuingCa };
  private round = 0;
  /** The database `issue(…, 'kept')` writes into, open across calls. */
  private kept: Store | undefined;

  private constructor(private readonly dir: string) {
    const caDir = join(dir, 'ca');
    initCa({
      dir: caDir,
      passphrase: undefined,
      organization: 'Bench',
      gatewayId: 'bench',
      rootKeyType: 'ec-p256',
      issuers: { ec: 'ec-p256', rsa: 'rsa-2048' },
      rootValidityDays: 3650,
      issuingValidityDays: 1825,
    });
    this.issuers = { ec: IssuingCa.load(caDir, 'ec', undefined)!, rsa: IssuingCa.load(caDir, 'rsa', undefined)! };
  }

  static create(): CaReference {
    const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-ca-'));
    try {
      return new CaReference(dir);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** `count` P-256 CSRs from distinct keys (the CA refuses a key bound to another identity). */
  static p256Csrs(count: number, prefix = 'ec'): string[] {
    return Array.from({ length: count }, (_, i) => buildCsr(SoftwareKey.generate('ec-p256'), encodeName({ commonName: `${prefix}-${i}` })));
  }

  /**
   * Issues every CSR under `profile` into a fresh database, or into the one
   * kept across calls (which grows as a gateway's does: a CA writing into a
   * database of 10,000 certificates was measured 11 % dearer per certificate
   * than into an empty one); the wall and CPU seconds of this process it took.
   */
  async issue(csrs: string[], profile: string, prefix: string, into: 'fresh' | 'kept' = 'fresh'): Promise<{ seconds: number; cpuSeconds: number }> {
    const store = into === 'kept' ? (this.kept ??= this.open()) : this.open();
    try {
      const ca = new CertificateAuthority({
        issuers: this.issuers,
        store: new CertificateRepository(store),
        organization: 'Bench',
        validityDays: { 'mqtt-device': 365, 'opcua-application': 730, 'broker-server': 365, 'agent-client': 365 },
        allowKeyReuse: false,
      });
      const started = performance.now();
      const cpu = process.cpuUsage();
      for (let i = 0; i < csrs.length; i += CONCURRENCY) {
        await Promise.all(csrs.slice(i, i + CONCURRENCY).map((csr, j) => ca.issue({ profile, identity: `${prefix}-${i + j}`, csr })));
      }
      const used = process.cpuUsage(cpu);
      return { seconds: (performance.now() - started) / 1000, cpuSeconds: (used.user + used.system) / 1e6 };
    } finally {
      if (store !== this.kept) store.close();
    }
  }

  private open(): Store {
    return Store.open(
      { path: join(this.dir, `round-${this.round++}.db`), busyTimeoutMs: 5000, journalSizeLimitBytes: 64 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    ).store;
  }

  close(): void {
    try {
      this.kept?.close();
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}
