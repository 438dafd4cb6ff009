import { existsSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { CertificateRecord } from '../../certs/store.js';
import { ExitCode, UsageError } from '../errors.js';
import type { AuditEntry } from '../store/auditRepository.js';
import { apiOptions, runApi, type ApiOptions } from './apiCommand.js';
import { readStore } from './common.js';

type Listed = Omit<CertificateRecord, 'pem'>;

const row = (c: Listed): string =>
  [c.serial, c.profile, c.identity, c.status + (c.revocationReason ? ` (${c.revocationReason})` : ''), new Date(c.notAfter).toISOString()].join('\t');

const table = (rows: Listed[]): string =>
  rows.length === 0 ? 'no certificates\n' : `${['SERIAL', 'PROFILE', 'IDENTITY', 'STATUS', 'NOT AFTER'].join('\t')}\n${rows.map((c) => row(c)).join('\n')}\n`;

const auditRow = (e: AuditEntry): string =>
  [new Date(e.at).toISOString(), `${e.actor} (${e.role})`, e.action, e.target, e.outcome, e.details ? JSON.stringify(e.details) : ''].join('\t');

const auditTable = (rows: AuditEntry[]): string => (rows.length === 0 ? 'no entries\n' : `${rows.map((e) => auditRow(e)).join('\n')}\n`);

/**
 * `certs`: the certificates the gateway CA issued, through the running
 * daemon's API (technicians read; administrators revoke). `ca` stays the
 * administrator's command on the CA files themselves. `audit`: who changed
 * what through the API.
 */
export function registerCertsCommands(program: Command, result: { code: number }): void {
  const usage = (message: string) => {
    process.stderr.write(`edge-agent: ${message}\n`);
    return ExitCode.usage;
  };
  const certs = program.command('certs').description('certificates the gateway CA issued, through the daemon: list, show, revoke, CRL');
  apiOptions(
    certs
      .command('list')
      .description('certificates, soonest expiry first (reads the database when the daemon is down)')
      .option('--status <status>', 'valid, revoked or superseded')
      .option('--profile <profile>', 'mqtt-device, opcua-application, broker-server or agent-client')
      .option('--identity <id>', 'one identity (device id or application URI)'),
  ).action(async (o: ApiOptions & { status?: string; profile?: string; identity?: string }) => {
    const filter = { ...(o.status ? { status: o.status } : {}), ...(o.profile ? { profile: o.profile } : {}), ...(o.identity ? { identity: o.identity } : {}) };
    result.code = await runApi(
      o,
      async (client) => {
        const items: Listed[] = [];
        for (let total = Infinity; items.length < total; ) {
          const page = (
            await client.call<{ total: number; items: Listed[] }>(
              'GET',
              `/api/v1/certificates?${new URLSearchParams({ ...filter, limit: '1000', offset: String(items.length) })}`,
            )
          ).body;
          total = page.total;
          items.push(...page.items);
          if (page.items.length === 0) break;
        }
        return items;
      },
      table,
      {
        what: 'read from the database directly',
        run: (config) => {
          if (o.status && !['valid', 'revoked', 'superseded'].includes(o.status)) throw new UsageError('--status takes valid, revoked or superseded');
          return readStore(config, (_store, repos) => repos.certificates.list({ ...(filter as object), limit: 1_000_000 }).map(({ pem: _pem, ...r }) => r));
        },
      },
    );
  });
  apiOptions(certs.command('show').description('one certificate with its PEM').argument('<serial>', 'serial number in hex (certs list)')).action(
    async (serial: string, o: ApiOptions) => {
      if (!/^[0-9a-fA-F]{1,64}$/.test(serial)) return void (result.code = usage('a serial is hexadecimal (certs list)'));
      result.code = await runApi(
        o,
        async (client) => (await client.call<{ certificate: CertificateRecord }>('GET', `/api/v1/certificates/${serial}`)).body.certificate,
        (c: CertificateRecord) => `${table([c])}${c.subject}\n${c.san}\nthumbprint SHA-256 ${c.thumbprint}\n${c.pem}`,
        {
          what: 'read from the database directly',
          run: (config) =>
            readStore(config, (_store, repos) => {
              const c = repos.certificates.get(serial.toLowerCase());
              if (!c) throw new UsageError(`no certificate ${serial}`);
              return c;
            }),
        },
      );
    },
  );
  apiOptions(
    certs
      .command('revoke')
      .description('revoke a certificate and publish the CRL at once (administrators; needs the running daemon; edge-agent ca revoke works without it)')
      .argument('<serial>', 'serial number in hex')
      .requiredOption('--reason <reason>', 'unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation or privilegeWithdrawn')
      .option('--note <text>', 'why, for the audit log'),
    false,
  ).action(async (serial: string, o: ApiOptions & { reason: string; note?: string }) => {
    if (!/^[0-9a-fA-F]{1,64}$/.test(serial)) return void (result.code = usage('a serial is hexadecimal (certs list)'));
    result.code = await runApi(
      o,
      async (client) =>
        (await client.call<{ revoked: Listed[] }>('POST', `/api/v1/certificates/${serial}/revoke`, { reason: o.reason, ...(o.note ? { note: o.note } : {}) }))
          .body.revoked,
      (rows: Listed[]) => `revoked ${rows.map((r) => `${r.serial} (${r.identity})`).join(', ')}; the CRL is published\n`,
    );
  });
  type Crl = { file: string; revoked: number; pem: string | null };
  apiOptions(certs.command('crl').description('the CRL the agent publishes, in PEM (reads the file when the daemon is down)')).action(async (o: ApiOptions) => {
    result.code = await runApi(
      o,
      async (client) => (await client.call<Crl>('GET', '/api/v1/certificates/crl')).body,
      (r: Crl) => r.pem ?? `no CRL written yet at ${r.file}\n`,
      {
        what: 'read from the CRL file and the database directly',
        run: (config) =>
          readStore(config, (_store, repos) => ({
            file: config.ca.crlFile,
            revoked: repos.certificates.list({ status: 'revoked', limit: 1_000_000 }).length,
            pem: existsSync(config.ca.crlFile) ? readFileSync(config.ca.crlFile, 'utf8') : null,
          })),
      },
    );
  });

  apiOptions(
    program
      .command('audit')
      .description('who changed what through the API, newest first (administrators and technicians; reads the database when the daemon is down)')
      .option('--actor <user>', 'only this user')
      .option('--limit <n>', 'how many', '100'),
  ).action(async (o: ApiOptions & { actor?: string; limit: string }) => {
    const limit = Number(o.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1_000) return void (result.code = usage('--limit takes a whole number from 1 to 1000'));
    result.code = await runApi(
      o,
      async (client) =>
        (
          await client.call<{ items: AuditEntry[] }>(
            'GET',
            `/api/v1/audit?${new URLSearchParams({ limit: String(limit), ...(o.actor ? { actor: o.actor } : {}) })}`,
          )
        ).body.items,
      auditTable,
      {
        what: 'read from the database directly',
        run: (config) => readStore(config, (_store, repos) => repos.audit.list({ ...(o.actor ? { actor: o.actor } : {}), limit, offset: 0 }).items),
      },
    );
  });
}
