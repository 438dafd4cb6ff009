import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PolicyRule } from '../../agent/config/schema.js';
import type { Device } from '../../agent/inventory/device.js';
import { loadManufacturerCas } from '../../agent/onboarding/claim.js';
import { EnrollmentPolicy, globToRegExp, type PolicyConfig, type PolicyInput } from '../../agent/onboarding/policy.js';
import { Store } from '../../agent/store/database.js';
import { EnrollmentRepository } from '../../agent/store/enrollmentRepository.js';
import { tempDir } from '../helpers/daemon.js';
import { openssl, opensslCsr } from '../helpers/openssl.js';

/** Manufacturer CAs and IDevIDs made by openssl, not by the agent's code. */
async function manufacturer(dir: string, name: string): Promise<void> {
  const ok = await openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.pem`,
      '-subj',
      `/O=${name}/CN=${name} Device CA`,
      '-days',
      '3650',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  if (!ok.ok) throw new Error(ok.stderr);
}

async function idevid(dir: string, name: string, ca: string, serial: string): Promise<void> {
  const req = await openssl(
    [
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/O=Acme/CN=${name}/serialNumber=${serial}`,
    ],
    dir,
  );
  if (!req.ok) throw new Error(req.stderr);
  const sign = await openssl(
    ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '365', '-out', `${name}.pem`],
    dir,
  );
  if (!sign.ok) throw new Error(sign.stderr);
}

/** base64 of an openssl signature (SHA-256) over the DER of a CSR. */
async function signCsr(dir: string, csr: string, key: string): Promise<string> {
  const der = await openssl(['req', '-in', csr, '-outform', 'DER', '-out', `${csr}.der`], dir);
  if (!der.ok) throw new Error(der.stderr);
  const sig = await openssl(['dgst', '-sha256', '-sign', key, '-out', `${csr}.sig`, `${csr}.der`], dir);
  if (!sig.ok) throw new Error(sig.stderr);
  return readFileSync(join(dir, `${csr}.sig`)).toString('base64');
}

describe('enrollment policy', () => {
  let tmp: ReturnType<typeof tempDir>;
  let store: Store;
  let tokens: EnrollmentRepository;
  let csrDer: Buffer;
  let claim: { certificate: string; signature: string };
  const nameplate = { manufacturer: 'Acme Sensors', model: 'TS-100', serialNumber: 'SN-42' };

  beforeAll(async () => {
    tmp = tempDir();
    store = Store.open(
      { path: join(tmp.dir, 'p.db'), busyTimeoutMs: 1000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    ).store;
    tokens = new EnrollmentRepository(store);
    await manufacturer(tmp.dir, 'acme');
    await manufacturer(tmp.dir, 'other');
    await idevid(tmp.dir, 'dev-42', 'acme', 'SN-42');
    await opensslCsr(tmp.dir, 'op', 'ec-p256', { subject: '/CN=dev-42' });
    await openssl(['req', '-in', 'op.csr', '-outform', 'DER', '-out', 'op.der'], tmp.dir);
    csrDer = readFileSync(join(tmp.dir, 'op.der'));
    claim = { certificate: readFileSync(join(tmp.dir, 'dev-42.pem'), 'utf8'), signature: await signCsr(tmp.dir, 'op.csr', 'dev-42.key') };
  }, 180_000);
  afterAll(() => {
    store.close();
    tmp.cleanup();
  });

  const policy = (rules: PolicyRule[], extra: Partial<PolicyConfig> = {}) =>
    new EnrollmentPolicy({ rules, default: 'hold', renewal: 'hold', ...extra }, loadManufacturerCas, (s) => tokens.tokenBySecret(s));
  const input = (extra: Partial<PolicyInput> = {}): PolicyInput => ({ device: undefined, nameplate, csrDer, ...extra });
  const device = (patch: Partial<Device>): Device => ({
    id: 'mqtt:dev-42',
    protocol: 'mqtt',
    name: 'dev-42',
    state: 'discovered',
    blocked: false,
    preapproved: false,
    nameplate: {},
    source: {},
    online: false,
    firstSeen: new Date(),
    lastSeen: new Date(),
    revision: 1,
    updatedAt: new Date(),
    ...patch,
  });
  const claimRule = (file = 'acme.pem'): PolicyRule => ({ kind: 'claim', manufacturerCaFile: join(tmp.dir, file), action: 'approve' });

  describe('token rule', () => {
    it('approves with a valid token and names it for the use count', () => {
      const { token, record } = tokens.createToken('line 3', 2, new Date(Date.now() + 3_600_000));
      expect(policy([{ kind: 'token', action: 'approve' }]).evaluate(input({ enrollmentToken: token }))).toMatchObject({
        action: 'approve',
        tokenId: record.id,
        decidedBy: 'rule 1 (token)',
      });
    });
    it.each([
      ['unknown', () => 'not-a-token', /not known/],
      ['expired', () => tokens.createToken('old', 1, new Date(Date.now() - 1000)).token, /expired at/],
      [
        'used up',
        () => {
          const t = tokens.createToken('once', 1, new Date(Date.now() + 60_000));
          tokens.useToken(t.record.id);
          return t.token;
        },
        /used up \(1 uses\)/,
      ],
      [
        'revoked',
        () => {
          const t = tokens.createToken('gone', 5, new Date(Date.now() + 60_000));
          tokens.revokeToken(t.record.id);
          return t.token;
        },
        /was revoked/,
      ],
    ])('rejects an %s token', (_what, make, reason) => {
      const decision = policy([{ kind: 'token', action: 'approve' }]).evaluate(input({ enrollmentToken: make() }));
      expect(decision.action).toBe('reject');
      expect(decision.reason).toMatch(reason);
    });
    it('does not apply to a request without a token: the default decides', () => {
      expect(policy([{ kind: 'token', action: 'approve' }]).evaluate(input())).toMatchObject({ action: 'hold', decidedBy: 'default' });
    });
    it('stores only the hash of a token', () => {
      const { token } = tokens.createToken('hashing', 1, new Date(Date.now() + 60_000));
      const dump = JSON.stringify(store.db.prepare('SELECT * FROM enrollment_tokens').all());
      expect(dump).not.toContain(token);
    });
  });

  describe('manufacturer claim rule (IDevID)', () => {
    it('approves an IDevID from the manufacturer CA whose key signed the CSR', () => {
      expect(policy([claimRule()]).evaluate(input({ claim }))).toMatchObject({ action: 'approve', reason: expect.stringMatching(/CN=dev-42/) });
    });
    it('rejects a forged signature (made with another key)', async () => {
      await opensslCsr(tmp.dir, 'forger', 'ec-p256');
      const forged = { ...claim, signature: await signCsr(tmp.dir, 'op.csr', 'forger.key') };
      expect(policy([claimRule()]).evaluate(input({ claim: forged }))).toMatchObject({ action: 'reject', reason: expect.stringMatching(/does not verify/) });
    });
    it('rejects a signature over another CSR', async () => {
      await opensslCsr(tmp.dir, 'second', 'ec-p256', { subject: '/CN=dev-42' });
      const other = { ...claim, signature: await signCsr(tmp.dir, 'second.csr', 'dev-42.key') };
      expect(policy([claimRule()]).evaluate(input({ claim: other })).action).toBe('reject');
    });
    it('rejects an IDevID from a CA that is not configured', async () => {
      await idevid(tmp.dir, 'stranger', 'other', 'SN-42');
      const stranger = { certificate: readFileSync(join(tmp.dir, 'stranger.pem'), 'utf8'), signature: await signCsr(tmp.dir, 'op.csr', 'stranger.key') };
      expect(policy([claimRule()]).evaluate(input({ claim: stranger }))).toMatchObject({ action: 'reject', reason: expect.stringMatching(/does not chain/) });
    });
    it('rejects an IDevID for another serial number than the nameplate', () => {
      expect(policy([claimRule()]).evaluate(input({ claim, nameplate: { ...nameplate, serialNumber: 'SN-43' } }))).toMatchObject({
        action: 'reject',
        reason: expect.stringMatching(/SN-42/),
      });
    });
    it('refuses a manufacturer CA file without a CA certificate', () => {
      expect(() => policy([claimRule('dev-42.pem')])).toThrow(/not a CA certificate/);
    });
  });

  describe('allowlists, order and defaults', () => {
    it('matches manufacturer, model and serial patterns case-insensitively', () => {
      const rule: PolicyRule = { kind: 'allowlist', manufacturer: 'acme*', model: 'TS-1??', serialNumber: 'SN-*', action: 'approve' };
      expect(policy([rule]).evaluate(input()).action).toBe('approve');
      expect(policy([rule]).evaluate(input({ nameplate: { ...nameplate, model: 'TS-2000' } })).action).toBe('hold');
    });
    it('lets the first rule that applies decide', () => {
      const { token } = tokens.createToken('order', 1, new Date(Date.now() + 60_000));
      const rules: PolicyRule[] = [
        { kind: 'allowlist', manufacturer: 'Acme*', action: 'reject' },
        { kind: 'token', action: 'approve' },
      ];
      expect(policy(rules).evaluate(input({ enrollmentToken: token }))).toMatchObject({ action: 'reject', decidedBy: 'rule 1 (allowlist)' });
    });
    it('treats regular-expression characters in patterns literally', () => {
      expect(globToRegExp('a.b(c)').test('a.b(c)')).toBe(true);
      expect(globToRegExp('a.b').test('axb')).toBe(false);
    });
    it('uses the default when no rule applies', () => {
      expect(policy([], { default: 'reject' }).evaluate(input())).toMatchObject({ action: 'reject', decidedBy: 'default' });
    });
  });

  describe('what the inventory and technicians already decided', () => {
    const approveAll: PolicyRule[] = [{ kind: 'allowlist', action: 'approve' }];
    it.each([
      ['hold', 'hold'],
      ['reject', 'reject'],
      ['policy', 'approve'],
    ] as const)('applies mqtt.policy.renewal %s to a provisioned device', (renewal, action) => {
      expect(policy(approveAll, { renewal }).evaluate(input({ device: device({ state: 'provisioned', certificateSerial: '01' }) })).action).toBe(action);
    });
    it('holds a device a technician rejected even when a rule approves', () => {
      expect(policy(approveAll).evaluate(input({ device: device({ state: 'rejected', blocked: true }) }))).toMatchObject({
        action: 'hold',
        decidedBy: 'inventory',
      });
    });
    it('approves a device a technician approved in advance', () => {
      expect(policy([], { default: 'reject' }).evaluate(input({ device: device({ preapproved: true }) }))).toMatchObject({
        action: 'approve',
        decidedBy: 'technician',
      });
    });
    it('rejects a decommissioned device whatever the rules say', () => {
      expect(policy(approveAll).evaluate(input({ device: device({ state: 'decommissioned' }) })).action).toBe('reject');
    });
  });
});
