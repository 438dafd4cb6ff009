import { createPrivateKey } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CertError } from '../../../certs/errors.js';
import { initCa } from '../../../certs/hierarchy.js';
import { keyFileProtection, readKeyFile } from '../../../certs/keys/fileKey.js';
import { pemBlocks, toPem } from '../../../certs/x509/pem.js';
import { Daemon, runCli, tempDir, writeConfig } from '../../helpers/daemon.js';
import { openssl } from '../../helpers/openssl.js';

const PASSPHRASE = 'plant-floor-secret';

function makeCa(dir: string, passphrase: string | undefined = PASSPHRASE): void {
  initCa({
    dir,
    passphrase,
    organization: 'Test Plant',
    gatewayId: 'test-gw',
    rootKeyType: 'ec-p256',
    issuers: { ec: 'ec-p256', rsa: 'rsa-2048' },
    rootValidityDays: 3650,
    issuingValidityDays: 1825,
  });
}

const keyFiles = (dir: string) =>
  readdirSync(dir)
    .filter((f) => f.endsWith('.key'))
    .map((f) => join(dir, f));

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof CertError) return err.code;
    throw err;
  }
  return 'no error';
}

describe('CA key files', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemons: Daemon[];
  beforeEach(() => {
    tmp = tempDir();
    daemons = [];
  });
  afterEach(async () => {
    for (const d of daemons) await d.dispose();
    tmp.cleanup();
  });

  it('are encrypted with PBKDF2-HMAC-SHA256 at 600,000 iterations and AES-256-CBC, as openssl reads them', async () => {
    const dir = join(tmp.dir, 'ca');
    makeCa(dir);
    writeFileSync(join(tmp.dir, 'pass'), PASSPHRASE);
    writeFileSync(join(tmp.dir, 'wrong'), 'not-the-passphrase');
    for (const file of keyFiles(dir)) {
      expect((await openssl(['pkey', '-in', file, '-passin', `file:${join(tmp.dir, 'pass')}`, '-noout'], tmp.dir)).ok, file).toBe(true);
      expect((await openssl(['pkey', '-in', file, '-passin', `file:${join(tmp.dir, 'wrong')}`, '-noout'], tmp.dir)).ok).toBe(false);
      const parsed = await openssl(['asn1parse', '-in', file], tmp.dir);
      expect(parsed.stdout).toMatch(/OBJECT\s+:PBES2/);
      expect(parsed.stdout).toMatch(/OBJECT\s+:PBKDF2/);
      expect(parsed.stdout).toMatch(/OBJECT\s+:hmacWithSHA256/);
      expect(parsed.stdout).toMatch(/OBJECT\s+:aes-256-cbc/);
      // The iteration count is the first INTEGER of the PBKDF2 parameters.
      const count = /prim: INTEGER\s+:([0-9A-F]+)/.exec(parsed.stdout)?.[1];
      expect(parseInt(count ?? '0', 16)).toBe(600_000);
      expect(keyFileProtection(file)).toMatchObject({ encrypted: true, weak: false, iterations: 600_000, prf: 'hmacWithSHA256', cipher: 'aes-256-cbc' });
      // node:crypto reads it by itself too, with the passphrase alone.
      expect(createPrivateKey({ key: readFileSync(file, 'utf8'), passphrase: PASSPHRASE }).asymmetricKeyType).toMatch(/^(ec|rsa)$/);
    }
  });

  it('tells a damaged or truncated key from a wrong passphrase, at the library and at the daemon start', async () => {
    const config = writeConfig(tmp.dir);
    const dir = join(tmp.dir, 'data', 'ca');
    makeCa(dir);
    const path = join(dir, 'issuing-ec.key');
    const good = readFileSync(path, 'utf8');
    const der = pemBlocks(good)[0]!.der;
    expect(codeOf(() => readKeyFile(path, 'not-the-passphrase'))).toBe('CA_PASSPHRASE_WRONG');

    const lines = good.trimEnd().split('\n');
    const lastBlockFlipped = Buffer.from(der);
    lastBlockFlipped[lastBlockFlipped.length - 5]! ^= 0x40;
    const variants: Record<string, string> = {
      'cut in the middle': good.slice(0, Math.floor(good.length / 2)),
      'lines lost, armour intact': [lines[0], ...lines.slice(1, -1).slice(0, -1), lines.at(-1)].join('\n') + '\n',
      'a byte of the ciphertext changed': toPem('ENCRYPTED PRIVATE KEY', lastBlockFlipped),
      empty: '',
    };
    for (const [what, text] of Object.entries(variants)) {
      writeFileSync(path, text, { mode: 0o600 });
      expect(
        codeOf(() => readKeyFile(path, PASSPHRASE)),
        what,
      ).toBe('CA_KEY_DAMAGED');
      expect(
        codeOf(() => readKeyFile(path, 'not-the-passphrase')),
        what,
      ).toBe(what === 'a byte of the ciphertext changed' ? 'CA_PASSPHRASE_WRONG' : 'CA_KEY_DAMAGED');
    }

    writeFileSync(path, variants['cut in the middle']!, { mode: 0o600 });
    const d = Daemon.start(config, { env: { EDGE_AGENT_CA_PASSPHRASE: PASSPHRASE } });
    daemons.push(d);
    expect((await d.exited).code).toBe(78);
    expect(d.stderr).toContain(`CA key ${path} is damaged or truncated`);
    expect(d.stderr).not.toContain('passphrase is wrong');
    writeFileSync(path, good, { mode: 0o600 });
    expect(readKeyFile(path, PASSPHRASE).asymmetricKeyType).toBe('ec');
  });

  it('still load when written with 2,048 iterations, are reported at start, and ca passphrase --keep-passphrase upgrades them', async () => {
    const config = writeConfig(tmp.dir);
    const dir = join(tmp.dir, 'data', 'ca');
    makeCa(dir);
    // What the agent wrote before: Node's own export, PBKDF2 at OpenSSL's default count.
    for (const file of keyFiles(dir)) {
      const key = readKeyFile(file, PASSPHRASE);
      writeFileSync(file, key.export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: PASSPHRASE }), { mode: 0o600 });
      expect(keyFileProtection(file)).toMatchObject({ encrypted: true, weak: true, iterations: 2048 });
    }
    const env = { EDGE_AGENT_CA_PASSPHRASE: PASSPHRASE };
    const old = Daemon.start(config, { env });
    daemons.push(old);
    await old.ready();
    const warned = old.logs.filter((l) => l.msg.startsWith('CA key is encrypted with a weak work factor')).map((l) => l.file);
    expect(warned.sort()).toEqual(keyFiles(dir).sort());
    old.kill('SIGTERM');
    expect((await old.exited).code).toBe(0);

    const upgrade = await runCli(['ca', 'passphrase', '--keep-passphrase', '--config', config], { env });
    expect(upgrade.code, upgrade.stderr).toBe(0);
    expect(upgrade.stdout).toContain('re-encrypted 3 key file(s) with the same passphrase');
    for (const file of keyFiles(dir)) expect(keyFileProtection(file)).toMatchObject({ weak: false, iterations: 600_000 });

    const upgraded = Daemon.start(config, { env });
    daemons.push(upgraded);
    await upgraded.ready();
    expect(upgraded.logs.filter((l) => l.msg.startsWith('CA key is encrypted with a weak work factor'))).toEqual([]);
    upgraded.kill('SIGTERM');
    expect((await upgraded.exited).code).toBe(0);
  }, 60_000); // two starts and a command, each reading passphrase-encrypted keys
});
