import type { ServerResponse } from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CertError } from '../../certs/errors.js';
import { sendError } from '../../agent/api/httpServer.js';
import { ApiError, jsonBody } from '../../agent/api/router.js';
import { ApiAnswerError, DaemonUnavailableError, NoTokenError } from '../../agent/cli/apiClient.js';
import { AGENT_ERRORS, API_ERRORS, CERT_ERRORS, ERROR_TABLE, ExitCode, type ErrorCode } from '../../agent/errorTable.js';
import {
  AgentError,
  codeOf,
  commandExitCode,
  ConfigError,
  ConfigFileError,
  DirectoryError,
  exitCodeFor,
  exitForAnswer,
  httpStatusOf,
  RefusedError,
  ServiceStartError,
  StoreAccessError,
  StoreCorruptError,
  StoreMissingError,
  StoreNotMigratedError,
  StoreTooNewError,
  TimeoutError,
  UsageError,
} from '../../agent/errors.js';
import { PassphraseError } from '../../agent/ca/passphrase.js';
import { InstanceLockedError } from '../../agent/lifecycle/instanceLock.js';
import { RequestError } from '../../agent/onboarding/request.js';
import { TransitionError } from '../../agent/store/deviceRepository.js';
import { UpstreamUnreachable } from '../../agent/sync/upstreamClient.js';
import { ProbeTimeout } from '../../agent/transport/deadline.js';
import { ChannelRefusedError } from '../../agent/transport/opcuaRefusal.js';
import { REPO } from '../helpers/daemon.js';

/** An error of the table with any code, as a subclass declares one. */
class Coded extends AgentError {
  constructor(readonly code: ErrorCode) {
    super(`a ${code}`);
  }
}

const EXITS = new Set<number>(Object.values(ExitCode));

describe('the error table', () => {
  it('gives every code an HTTP error status and an exit code of ExitCode, and each code one row', () => {
    const codes = [...Object.keys(API_ERRORS), ...Object.keys(AGENT_ERRORS), ...Object.keys(CERT_ERRORS)];
    expect(new Set(codes).size, 'a code in two groups would be overwritten in ERROR_TABLE').toBe(codes.length);
    expect(Object.keys(ERROR_TABLE)).toHaveLength(codes.length);
    for (const [code, row] of Object.entries(ERROR_TABLE)) {
      expect(code, code).toMatch(/^[A-Z][A-Z0-9_]*$/);
      expect(Number.isInteger(row.http) && row.http >= 400 && row.http <= 599, `${code}: http ${row.http}`).toBe(true);
      expect(EXITS.has(row.exit) && row.exit !== ExitCode.ok, `${code}: exit ${row.exit}`).toBe(true);
      if ('startExit' in row && row.startExit !== undefined) expect(EXITS.has(row.startExit), `${code}: startExit`).toBe(true);
      expect(row.title.length, code).toBeGreaterThan(0);
    }
  });

  it('maps an API answer to the exit code commands have always given its status, one exit code per status', () => {
    // The rule before the table: 401/403/429 permission, 400/404/413 a bad command line, the rest failures.
    const byStatus = (status: number) => ([401, 403, 429].includes(status) ? 77 : [400, 404, 413].includes(status) ? 64 : 1);
    for (const [code, row] of Object.entries(API_ERRORS)) {
      expect(row.exit, code).toBe(byStatus(row.http));
      expect(exitForAnswer(row.http, code), code).toBe(row.exit);
    }
    // A code this build does not know (another version's, a proxy's page) goes by its status.
    expect(exitForAnswer(404, 'NO_SUCH_THING')).toBe(64);
    expect(exitForAnswer(401, 'NOT_JSON')).toBe(77);
    expect(exitForAnswer(502, 'NOT_JSON')).toBe(1);
    expect(exitForAnswer(418, 'UNKNOWN')).toBe(1);
  });

  it('answers an API error with the status of its code', async () => {
    expect(new ApiError('NO_SUCH_DEVICE', 'no device x').status).toBe(404);
    expect(new ApiError('TOO_MANY_STREAMS', 'x').status).toBe(429);
    const written: { status?: number; body?: string } = {};
    const res = { writeHead: (status: number) => (written.status = status), end: (body: string) => (written.body = body) } as unknown as ServerResponse;
    sendError(res, 'HOST_NOT_ALLOWED', 'not this listener');
    expect(written).toEqual({ status: 421, body: JSON.stringify({ code: 'HOST_NOT_ALLOWED', message: 'not this listener' }) });
    const req = Object.assign(
      (async function* () {
        yield Buffer.from('{');
      })(),
      { headers: { 'content-type': 'application/json' } },
    );
    const bad = await jsonBody(req as never, (await import('zod')).z.object({})).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(ApiError);
    expect([(bad as ApiError).code, (bad as ApiError).status]).toEqual(['BAD_JSON', 400]);
  });

  it('ends a command with the exit code of its error, and the daemon start with the start exit code of the cause', () => {
    for (const [code, row] of Object.entries(ERROR_TABLE) as [ErrorCode, (typeof ERROR_TABLE)[ErrorCode]][]) {
      expect(commandExitCode(new Coded(code)), code).toBe(row.exit);
      const start = 'startExit' in row && row.startExit !== undefined ? row.startExit : row.exit;
      expect(exitCodeFor(new ServiceStartError('lock failed to start', { cause: new Coded(code) })), code).toBe(start);
      expect(httpStatusOf(code)).toBe(row.http);
    }
    // Errors without a code of the table: 1.
    expect(commandExitCode(new Error('a bug'))).toBe(1);
    expect(commandExitCode(Object.assign(new Error('a library'), { code: 'USAGE' }))).toBe(1);
    expect(exitCodeFor(new ServiceStartError('x'))).toBe(1);
  });

  it('keeps the exit codes commands and the daemon gave before the table', () => {
    const cases: [string, unknown, number, number][] = [
      // name, error, a command's exit, the daemon start's exit
      ['configuration', new ConfigError('f.yaml', []), 78, 78],
      ['configured file', new ConfigFileError('x'), 78, 78],
      ['corrupt database', new StoreCorruptError('x'), 65, 65],
      ['newer database', new StoreTooNewError('x'), 65, 65],
      ['no database', new StoreMissingError('x'), 66, 66],
      ['database to migrate', new StoreNotMigratedError('x'), 69, 69],
      ['database not readable', new StoreAccessError('x'), 77, 77],
      ['usage', new UsageError('x'), 64, 64],
      ['refused', new RefusedError('x'), 1, 1],
      ['timeout', new TimeoutError('x'), 1, 1],
      ['CA passphrase file', new PassphraseError('x'), 1, 78],
      ['wrong CA passphrase', new CertError('CA_PASSPHRASE_WRONG', 'x'), 1, 78],
      ['no CA', new CertError('CA_NOT_INITIALISED', 'x'), 1, 78],
      ['CA exists', new CertError('CA_ALREADY_INITIALISED', 'x'), 1, 1],
      ['bad CSR', new CertError('CSR_MALFORMED', 'x'), 1, 1],
      ['no token', new NoTokenError('x'), 77, 77],
      ['daemon down', new DaemonUnavailableError('x', false), 69, 69],
      ['another agent', new InstanceLockedError('x'), 1, 1],
      ['directory login refused', new DirectoryError('LOGIN_FAILED', 'x', { refusal: 'bad-credentials' }), 77, 77],
      ['directory down', new DirectoryError('DIRECTORY_UNAVAILABLE', 'x'), 1, 1],
      ['directory certificate', new DirectoryError('DIRECTORY_CERTIFICATE', 'x'), 1, 1],
    ];
    for (const [name, err, command, start] of cases) {
      expect(commandExitCode(err), name).toBe(command);
      expect(exitCodeFor(err), name).toBe(start);
      expect(exitCodeFor(new ServiceStartError('a service failed to start', { cause: err })), name).toBe(start);
    }
  });

  it('gives every error class of the agent a code of the table', () => {
    const errors: unknown[] = [
      new PassphraseError('x'),
      new UpstreamUnreachable('x'),
      new TransitionError('x'),
      new ProbeTimeout('x'),
      new ChannelRefusedError('x', 0x80130000, 'BadSecurityChecksFailed'),
      new InstanceLockedError('x'),
      new RequestError('TOO_DEEP', 'x'),
      new ApiError('REFUSED', 'x'),
      new ApiAnswerError(409, 'REFUSED', 'x'),
      new DaemonUnavailableError('x', true),
      new CertError('CERT_NOT_FOUND', 'x'),
    ];
    for (const err of errors) expect(codeOf(err), String(err)).toBeDefined();
    expect((new ProbeTimeout('x') as AgentError).code).toBe('TIMEOUT');
  });

  it('is listed in docs/operations.md, code by code, with its HTTP status and exit codes', () => {
    const doc = readFileSync(join(REPO, 'docs', 'operations.md'), 'utf8');
    const section = doc.slice(doc.indexOf('## Error codes'), doc.indexOf('## systemd'));
    const documented = section
      .split('\n')
      .map((l) => /^\| `([A-Z0-9_]+)` \| (\d+) \| (\d+)(?: \(daemon start: (\d+)\))? \| (.+) \|$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1], Number(m[2]), Number(m[3]), m[4] === undefined ? undefined : Number(m[4]), m[5]]);
    const expected = Object.entries(ERROR_TABLE).map(([code, r]) => [code, r.http, r.exit, 'startExit' in r ? r.startExit : undefined, r.title]);
    expect(documented).toEqual(expected);
  });

  it('has a code for every error the agent raises: no plain Error is thrown, rejected or subclassed under agent/ but the two that never leave', () => {
    // The two kept: an AbortSignal's reason (cli/run.ts, read only by the services' abort handlers) and
    // the error Aedes reads returnCode from (transport/embeddedBroker.ts); each says so where it is.
    const allowed = new Map([
      ['agent/cli/run.ts', 1],
      ['agent/transport/embeddedBroker.ts', 1],
      ['agent/errors.ts', 1],
    ]);
    const found = new Map<string, string[]>();
    const walk = (dir: string): void => {
      for (const entry of readdirSync(join(REPO, dir), { withFileTypes: true })) {
        const rel = `${dir}/${entry.name}`;
        if (entry.isDirectory()) walk(rel);
        else if (rel.endsWith('.ts')) {
          const lines = readFileSync(join(REPO, rel), 'utf8').split('\n');
          const hits = lines.filter((l) => /\bnew Error\(|extends Error\b|throw ['`"]/.test(l));
          if (hits.length > 0) found.set(rel, hits);
        }
      }
    };
    walk('agent');
    const unexpected = [...found].filter(([file, hits]) => hits.length !== (allowed.get(file) ?? 0));
    expect(unexpected).toEqual([]);
    expect([...found.keys()].sort()).toEqual([...allowed.keys()].sort());
  });
});
