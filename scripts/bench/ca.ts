import { generateKeyPair, verify, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { IssuingCa } from '../../certs/issuer.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { parseCsr } from '../../certs/x509/csr.js';
import { encodeName } from '../../certs/x509/name.js';
import { CaReference } from './caReference.js';
import type { BenchResult } from './result.js';

const generate = promisify(generateKeyPair);
const fmt = (v: number) => Math.round(v).toLocaleString('en-US');
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

/**
 * Certificates issued per second from P-256 and RSA-2048 CSRs through the
 * whole pipeline (parse, proof of possession, build, lint, sign, durable
 * grouped recording in SQLite), next to the raw node:crypto rate of one CSR
 * verification plus one CA signature with the keys already imported, measured
 * in the same run.
 */
export async function caBench(): Promise<BenchResult[]> {
  const reference = CaReference.create();
  try {
    const issuers = reference.issuers;
    const raw = (csrs: string[], signer: IssuingCa, seconds: number) => {
      const parsed = csrs.map((c) => parseCsr(c));
      const keys: KeyObject[] = parsed.map((p) => p.publicKey.key());
      const hash = (p: (typeof parsed)[number]) => (p.publicKey.type === 'ec-p384' ? 'sha384' : 'sha256');
      let ops = 0;
      const started = performance.now();
      while (performance.now() - started < seconds * 1000) {
        const i = ops % parsed.length;
        const p = parsed[i]!;
        if (!verify(hash(p), p.tbs, keys[i]!, p.signature)) throw new Error('raw verify failed');
        signer.key.sign(p.tbs);
        ops++;
      }
      return ops / ((performance.now() - started) / 1000);
    };

    // P-256: distinct keys (the CA refuses a key bound to another identity).
    const ecCsrs = CaReference.p256Csrs(7_500);
    // 2,000 to warm up: after 500 the compiler was still at work in the measured part (a third lower).
    await reference.issue(ecCsrs.slice(0, 2_000), 'mqtt-device', 'warm');
    // Three measured rounds, each into a fresh database; the median of each figure (this machine's rates vary
    // by a third between runs minutes apart, and a ratio of two such figures by more).
    const ecMeasured = ecCsrs.slice(2_000);
    const ecRounds: { rate: number; perCpu: number }[] = [];
    for (let r = 0; r < 3; r++) {
      const { seconds, cpuSeconds } = await reference.issue(ecMeasured, 'mqtt-device', `dev${r}`);
      ecRounds.push({ rate: ecMeasured.length / seconds, perCpu: ecMeasured.length / cpuSeconds });
    }
    const ecRate = median(ecRounds.map((r) => r.rate));
    const ecPerCpu = median(ecRounds.map((r) => r.perCpu));
    const perCpuRange = `${fmt(Math.min(...ecRounds.map((r) => r.perCpu)))}–${fmt(Math.max(...ecRounds.map((r) => r.perCpu)))}`;
    const ecRaw = raw(ecCsrs, issuers.ec, 1);

    // RSA-2048 keys take ~160 ms each to make: a small pool, issued in several rounds, each into a fresh database.
    const rsaKeys = await Promise.all(Array.from({ length: 96 }, () => generate('rsa', { modulusLength: 2048 })));
    const rsaCsrs = rsaKeys.map((k, i) => buildCsr(new SoftwareKey(k.privateKey, 'rsa'), encodeName({ commonName: `rsa-${i}` })));
    let rsaSeconds = 0;
    let rsaCount = 0;
    for (let r = 0; r < 5; r++) {
      const { seconds } = await reference.issue(rsaCsrs, 'opcua-application', `urn:bench:${r}`);
      if (r === 0) continue; // warm-up round
      rsaSeconds += seconds;
      rsaCount += rsaCsrs.length;
    }
    const rsaRate = rsaCount / rsaSeconds;
    const rsaRaw = raw(rsaCsrs, issuers.rsa, 1);

    return [
      {
        name: 'ca: issue from P-256 CSRs (EC CA, durable)',
        value: ecRate,
        unit: 'certs/s',
        limit:
          `raw verify+sign ${fmt(ecRaw)}/s; ratio ${(ecRate / ecRaw).toFixed(2)}; target 2,500/s; ` +
          `${fmt(ecPerCpu)} per CPU-second (median of 3 rounds: ${perCpuRange})`,
        perCpuSecond: ecPerCpu,
      },
      {
        name: 'ca: issue from RSA-2048 CSRs (RSA CA, durable)',
        value: rsaRate,
        unit: 'certs/s',
        limit: `raw verify+sign ${fmt(rsaRaw)}/s; ratio ${(rsaRate / rsaRaw).toFixed(2)}`,
      },
    ];
  } finally {
    reference.close();
  }
}
