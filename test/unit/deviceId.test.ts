import { describe, expect, it } from 'vitest';
import { DEVICE_ID_PATTERN } from '../../certs/profiles/deviceId.js';
import { configSchema, defaultAgentId, defaultConfig } from '../../agent/config/schema.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { profileNamed } from '../../certs/profiles/index.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import { caFixture } from '../helpers/caFixture.js';
import { tempDir } from '../helpers/daemon.js';

describe('the device id rule (certs/profiles/deviceId.ts, used by the agent)', () => {
  it.each([
    ['pump-7', true],
    ['a', true],
    ['node.device', true],
    ['...', true],
    ['.hidden', true],
    ['x'.repeat(64), true],
    ['.', false],
    ['..', false],
    ['', false],
    ['x'.repeat(65), false],
    ['a/b', false],
    ['a b', false],
    ['pump#1', false],
    ['..\n', false],
  ])('%j → %s', (id, ok) => {
    expect(DEVICE_ID_PATTERN.test(id)).toBe(ok);
  });

  it.each(['mqtt-device', 'broker-server', 'agent-client'] as const)('refuses "." and ".." as the identity of a %s certificate', (profile) => {
    for (const identity of ['.', '..']) {
      expect(() =>
        profileNamed(profile).template({ identity, ...(profile === 'broker-server' ? { dnsNames: ['localhost'] } : {}) }, 'ec-p256', 'Plant'),
      ).toThrow(expect.objectContaining({ code: 'REQUEST_INVALID', message: expect.stringMatching(/not "\." or "\.\."/) }));
    }
  });

  it('issues no certificate with CN ".." (the CA records nothing)', async () => {
    const tmp = tempDir();
    const ca = caFixture(tmp.dir);
    try {
      const key = SoftwareKey.generate('ec-p256');
      await expect(ca.authority.issue({ profile: 'mqtt-device', identity: '..', csr: buildCsr(key, encodeName({ commonName: '..' })) })).rejects.toMatchObject({
        code: 'REQUEST_INVALID',
      });
      expect(ca.count()).toBe(0);
    } finally {
      ca.close();
      tmp.cleanup();
    }
  });

  it('refuses "." and ".." as agent.id and sync.gatewayId, and never derives one from the host name', () => {
    const config = defaultConfig();
    for (const id of ['.', '..']) {
      expect(configSchema.safeParse({ ...config, agent: { ...config.agent, id } }).success).toBe(false);
      expect(configSchema.safeParse({ ...config, sync: { ...config.sync, gatewayId: id } }).success).toBe(false);
      expect(defaultAgentId(id)).toBe('edge-gateway');
    }
    expect(configSchema.safeParse({ ...config, sync: { ...config.sync, gatewayId: '' } }).success).toBe(true);
  });
});
