import { execFile } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SoftwareKey } from '../../../certs/keys/backend.js';
import { CertError } from '../../../certs/errors.js';
import { parseCsr, verifyCsr } from '../../../certs/x509/csr.js';
import { buildCsr } from '../../../certs/x509/csrBuilder.js';
import { bitString, children, decodeOid, read, sequence } from '../../../certs/x509/der.js';
import { encodeName } from '../../../certs/x509/name.js';
import { derFrom } from '../../../certs/x509/pem.js';
import { subjectAltName } from '../../../certs/x509/extensions.js';
import { byteMutant, seededRandom, treeMutant } from '../../helpers/csrMutants.js';
import { tempDir } from '../../helpers/daemon.js';
import { opensslCsr } from '../../helpers/openssl.js';

const exec = promisify(execFile);

/** What parsing and verifying a CSR may refuse with; anything else thrown is a defect. */
const CSR_CODES = new Set([
  'CSR_MALFORMED',
  'CSR_TOO_LARGE',
  'CSR_SIGNATURE_INVALID',
  'CSR_SIGNATURE_ALGORITHM_UNSUPPORTED',
  'KEY_TOO_WEAK',
  'KEY_TYPE_UNSUPPORTED',
  'NAME_INVALID',
]);

const HASH: Record<string, string> = { '1.2.840.10045.4.3.2': 'sha256', '1.2.840.10045.4.3.3': 'sha384', '1.2.840.113549.1.1.11': 'sha256' };

interface Seed {
  name: string;
  der: Buffer;
  key: KeyObject;
}

/**
 * Seeded mutation fuzz of the CSR parser. Mutants of a few valid CSRs (EC
 * and RSA, from openssl and from the agent) come in three kinds: raw bytes
 * changed (framing not repaired), one DER node changed with the lengths
 * above it repaired, and the request body changed that way and signed again
 * with the CSR's key (so the signature does not mask what the parser should
 * catch). The parser must refuse with a CSR error code and nothing else, and
 * every mutant it accepts with a verified signature must pass
 * `openssl req -verify` too: it is never more lenient than OpenSSL.
 */
describe('CSR parser under a mutation fuzz', () => {
  let tmp: ReturnType<typeof tempDir>;
  const seeds: Seed[] = [];

  beforeAll(async () => {
    tmp = tempDir();
    const fromOpenssl = async (name: string, spec: Parameters<typeof opensslCsr>[2], options: Parameters<typeof opensslCsr>[3]) => {
      const der = derFrom(await opensslCsr(tmp.dir, name, spec, options), ['CERTIFICATE REQUEST'], 'csr');
      seeds.push({ name, der: Buffer.from(der), key: createPrivateKey(readFileSync(join(tmp.dir, `${name}.key`))) });
    };
    await fromOpenssl('ec256', 'ec-p256', {
      subject: '/C=DE/O=Plant 4/OU=Line 2/CN=pump-7',
      addext: ['subjectAltName=DNS:pump-7.local,IP:10.0.0.7', 'keyUsage=critical,digitalSignature', 'basicConstraints=critical,CA:FALSE'],
    });
    await fromOpenssl('rsa2048', 'rsa-2048', {
      subject: '/O=Plant 4/CN=Press 4',
      addext: [
        'subjectAltName=URI:urn:plant:press-4,DNS:press-4',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth,clientAuth',
      ],
    });
    await fromOpenssl('ec384', 'ec-p384', { subject: '/CN=meter-1' });
    const agentKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    seeds.push({
      name: 'agent',
      der: Buffer.from(
        derFrom(
          buildCsr(new SoftwareKey(agentKey, 'ec-p256'), encodeName({ organization: 'Plant', commonName: 'gw-1' }), [
            subjectAltName({ dnsNames: ['gw-1.local'] }),
          ]),
          ['CERTIFICATE REQUEST'],
          'csr',
        ),
      ),
      key: agentKey,
    });
  });
  afterAll(() => tmp.cleanup());

  it('refuses with a CSR error code only, and accepts nothing openssl req -verify refuses', async () => {
    const rng = seededRandom(0x13_2026);
    const accepted = new Map<string, { der: Buffer; how: string }>();
    const unexpected: string[] = [];
    const outcomes = new Map<string, number>();
    let total = 0;
    const attempt = (der: Buffer, how: string) => {
      total++;
      let outcome = 'accepted';
      try {
        verifyCsr(parseCsr(der));
        accepted.set(der.toString('hex'), { der, how });
      } catch (err) {
        if (err instanceof CertError && CSR_CODES.has(err.code)) outcome = err.code;
        else {
          outcome = 'unexpected';
          if (unexpected.length < 5) unexpected.push(`${how}: ${err instanceof CertError ? err.code : String(err)} on ${der.toString('base64')}`);
        }
      }
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    };

    for (const seed of seeds) {
      attempt(seed.der, `${seed.name} as made`);
      const [tbs, algorithm] = children(read(seed.der));
      const hash = HASH[decodeOid(children(algorithm!)[0]!)]!;
      for (let i = 0; i < 700; i++) attempt(byteMutant(seed.der, rng), `${seed.name} bytes`);
      for (let i = 0; i < 500; i++) attempt(treeMutant(seed.der, rng), `${seed.name} tree`);
      for (let i = 0; i < 400; i++) {
        const body = rng.next() < 0.8 ? treeMutant(Buffer.from(tbs!.raw), rng) : byteMutant(Buffer.from(tbs!.raw), rng);
        attempt(sequence(body, Buffer.from(algorithm!.raw), bitString(sign(hash, body, seed.key))), `${seed.name} body re-signed`);
      }
    }

    expect(unexpected).toEqual([]);
    expect(total).toBeGreaterThan(6_000);
    // The fuzz reached both sides: most mutants are refused, and some (the seeds, re-signed bodies) are accepted.
    expect(outcomes.get('CSR_MALFORMED') ?? 0).toBeGreaterThan(total / 3);
    expect(accepted.size).toBeGreaterThan(seeds.length);

    // Only what the parser accepted goes to openssl, one shell for all of them.
    const dir = join(tmp.dir, 'accepted');
    mkdirSync(dir);
    const files = [...accepted.values()].map((a, i) => {
      const file = join(dir, `${i}.der`);
      writeFileSync(file, a.der);
      return { file, how: a.how };
    });
    const script = 'for f in "$@"; do out=$(openssl req -inform DER -in "$f" -verify -noout 2>&1); case "$out" in *"verify OK"*) ;; *) echo "$f";; esac; done';
    const { stdout } = await exec('sh', ['-c', script, 'sh', ...files.map((f) => f.file)], { maxBuffer: 1 << 22 });
    const refusedByOpenssl = stdout
      .split('\n')
      .filter(Boolean)
      .map((file) => `${files.find((f) => f.file === file)?.how}: ${readFileSync(file).toString('base64')}`);
    expect(refusedByOpenssl).toEqual([]);
  }, 120_000);
});
