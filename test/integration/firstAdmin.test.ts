import { existsSync, mkdirSync, readFileSync, renameSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIRST_ADMIN_TOKEN_LABEL, hashSecret, newTokenSecret } from '../../agent/api/auth.js';
import { Store } from '../../agent/store/database.js';
import { UserRepository } from '../../agent/store/userRepository.js';
import { Daemon, runCli, tempDir, writeConfig } from '../helpers/daemon.js';

type Token = { id: number; label: string; expiresAt?: string; revokedAt?: string };

describe('the first-start admin token ends (real daemon)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let daemon: Daemon;
  let config: string;
  let base: string;
  const file = () => join(tmp.dir, 'data', 'admin.token');
  const call = async (path: string, secret: string) => {
    const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${secret}` } });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const start = async () => {
    daemon = Daemon.start(config);
    base = await daemon.ready();
  };
  const stop = async () => {
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  };

  beforeAll(async () => {
    tmp = tempDir();
    config = writeConfig(
      tmp.dir,
      [
        'agent:',
        '  id: gw-first',
        `  dataDir: ${join(tmp.dir, 'data')}`,
        'http:',
        '  port: 0',
        'mqtt:',
        '  enabled: false',
        'opcua:',
        '  enabled: false',
        '',
      ].join('\n'),
    );
    await start();
  }, 60_000);
  afterAll(async () => {
    await daemon?.dispose();
    tmp?.cleanup();
  });

  it('expires within 24 hours, and is revoked once admin.token no longer holds it; the commands then say what to do', async () => {
    const first = readFileSync(file(), 'utf8').trim();
    const before = Date.now();
    const listed = await call('/api/v1/tokens', first);
    expect(listed.status).toBe(200);
    const token = (listed.body.items as Token[]).find((t) => t.label === FIRST_ADMIN_TOKEN_LABEL)!;
    expect(token.expiresAt).toBeDefined();
    expect(Date.parse(token.expiresAt!)).toBeLessThanOrEqual(before + 24 * 3_600_000);
    expect(Date.parse(token.expiresAt!)).toBeGreaterThan(before + 23 * 3_600_000);

    // Deleting the file (here: moving it away) ends the token at its next use.
    renameSync(file(), `${file()}.moved`);
    expect(await call('/api/v1/me', first)).toMatchObject({ status: 401, body: { message: 'no valid token (revoked)' } });
    expect(await daemon.waitForLog((l) => l.msg === 'first-start admin token revoked')).toMatchObject({
      tokenId: token.id,
      why: 'admin.token no longer holds it',
    });
    // Putting it back does not bring it back, and a command using it is told why and what to do.
    renameSync(`${file()}.moved`, file());
    const refused = await runCli(['users', 'list', '--config', config]);
    expect(refused.code).toBe(77);
    expect(refused.stderr).toMatch(/UNAUTHENTICATED: no valid token \(revoked\); that is the token in admin\.token, .*tokens create --user NAME --local/);
  }, 60_000);

  // Seven commands and a restart: on a loaded machine that can take minutes.
  it('gives a token of an older version (no expiry) 24 hours at the next start, ' +
    "and revokes it when an administrator's own token is made (API and file)", async () => {
    await stop();
    // As an older version left it: a first-start token without expiry, in admin.token.
    const old = newTokenSecret();
    const { store } = Store.open(
      { path: join(tmp.dir, 'data', 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
      pino({ level: 'silent' }),
    );
    const users = new UserRepository(store);
    const legacy = store.durable(() => users.addToken(users.byName('admin')!.id, hashSecret(old), FIRST_ADMIN_TOKEN_LABEL, undefined));
    store.close();
    writeFileSync(file(), `${old}\n`, { mode: 0o600 });
    await start();
    await daemon.waitForLog((l) => l.msg.startsWith('the first-start admin token had no expiry') && l.tokenId === legacy.id);
    const token = ((await call('/api/v1/tokens', old)).body.items as Token[]).find((t) => t.id === legacy.id)!;
    expect(token.expiresAt).toBeDefined();

    // A file that is there but cannot be read proves nothing: the token is refused meanwhile, not revoked.
    renameSync(file(), `${file()}.aside`);
    mkdirSync(file());
    expect(await call('/api/v1/me', old)).toMatchObject({ status: 401, body: { message: 'no valid token (unconfirmed)' } });
    await daemon.waitForLog((l) => l.msg.startsWith('admin.token cannot be read') && (l.err as { code?: string } | undefined)?.code === 'EISDIR');
    rmdirSync(file());
    renameSync(`${file()}.aside`, file());
    expect((await call('/api/v1/me', old)).status).toBe(200);
    // An administrator's token that ends before the first-start one (here: made already expired) replaces nothing.
    expect((await runCli(['tokens', 'create', '--user', 'admin', '--expires', '0h', '--local', '--config', config])).code).toBe(0);
    expect((await runCli(['tokens', 'create', '--user', 'admin', '--expires', '1h', '--config', config])).code).toBe(0);
    expect(existsSync(file())).toBe(true);
    expect((await call('/api/v1/me', old)).status).toBe(200);

    // The commands use admin.token by default: a personal administrator and a token for her.
    expect((await runCli(['users', 'add', 'anna', '--role', 'admin', '--config', config])).code).toBe(0);
    const made = await runCli(['tokens', 'create', '--user', 'anna', '--expires', '90d', '--config', config]);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toContain('the first-start admin token (admin.token) is revoked now');
    const anna = /^(eat_\S+)$/m.exec(made.stdout)![1]!;
    expect(existsSync(file())).toBe(false);
    expect(await call('/api/v1/me', old)).toMatchObject({ status: 401, body: { message: 'no valid token (revoked)' } });
    const audit = (await call('/api/v1/audit', anna)).body.items as { actor: string; action: string; target: string; details?: { reason?: string } }[];
    expect(audit).toContainEqual(
      expect.objectContaining({
        actor: 'admin',
        action: 'token.revoke',
        target: `token ${legacy.id}`,
        details: expect.objectContaining({ reason: expect.stringMatching(/^first-start token, superseded by token \d+$/) }),
      }),
    );
    // A technician's token ends nothing.
    expect((await runCli(['users', 'add', 'tech-ben', '--role', 'technician', '--token', anna, '--config', config])).code).toBe(0);
    expect((await runCli(['tokens', 'create', '--user', 'tech-ben', '--json', '--token', anna, '--config', config])).code).toBe(0);
    expect((await call('/api/v1/me', anna)).status).toBe(200);
    // The label is the agent's own.
    const taken = await runCli(['tokens', 'create', '--user', 'tech-ben', '--label', FIRST_ADMIN_TOKEN_LABEL, '--token', anna, '--config', config]);
    expect(taken.code).toBe(64);
    await stop();
  }, 180_000);
});
