import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import forge from 'node-forge';
import { normaliseSerial, type CertificateAuthority } from '../../certs/authority.js';
import { CertError } from '../../certs/errors.js';
import { caStatus, importIntermediate, requestIntermediate } from '../../certs/hierarchy.js';
import { loadRoot, refreshRootCrl } from '../../certs/root.js';
import { registerRevokeIssuing } from './caRevokeIssuing.js';
import { reencryptKeyFiles, writeFileAtomic, writeKeyFile } from '../../certs/keys/fileKey.js';
import { SoftwareKey, CA_KEY_TYPES, type CaKeyType } from '../../certs/keys/backend.js';
import { PROFILE_NAMES, type ProfileName } from '../../certs/profiles/profile.js';
import { REVOCATION_REASON_CODES, type CertificateRecord, type RevocationReason } from '../../certs/store.js';
import { prepare } from '../../certs/request.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import { caExists, checkKeyFilePermissions, initFromConfig, loadAuthority, publishCrlFile } from '../ca/loadCa.js';
import { resolvePassphrase } from '../ca/passphrase.js';
import type { Config } from '../config/schema.js';
import { UsageError } from '../errors.js';
import { openRepositories, type Repositories } from '../store/repositories.js';
import { Store } from '../store/database.js';
import pino from 'pino';
import { collect, CONFIG_OPTION_HELP, readStore, run, type Common } from './common.js';

/** Opens the store and the authority for one command, and closes the store after. */
export async function withAuthority<T>(config: Config, fn: (ca: CertificateAuthority, repos: Repositories, store: Store) => Promise<T> | T): Promise<T> {
  const { store } = Store.open(config.store, pino({ level: 'silent' }));
  try {
    const repos = openRepositories(store);
    return await fn(loadAuthority(config.ca, repos.certificates, resolvePassphrase(config.ca)), repos, store);
  } finally {
    store.close();
  }
}

function parseDuration(text: string): number {
  const m = /^(\d+)\s*(h|d|w)$/.exec(text.trim());
  if (!m) throw new UsageError(`--expiring takes a duration such as 12h, 30d or 2w, not ${JSON.stringify(text)}`);
  return Number(m[1]) * { h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] as 'h' | 'd' | 'w'];
}

const table = (rows: CertificateRecord[]): string =>
  rows.length === 0
    ? 'no certificates\n'
    : `${['SERIAL', 'PROFILE', 'IDENTITY', 'STATUS', 'NOT AFTER'].join('\t')}\n${rows
        .map((r) => [r.serial, r.profile, r.identity, r.status, r.notAfter.toISOString()].join('\t'))
        .join('\n')}\n`;

function readP12Passphrase(file: string): string {
  if (!existsSync(file)) throw new UsageError(`${file} does not exist`);
  const passphrase = readFileSync(file, 'utf8').split(/\r?\n/)[0] ?? '';
  if (passphrase.length < 8) throw new UsageError('the PKCS#12 passphrase must be at least 8 characters');
  return passphrase;
}

export function registerCaCommands(program: Command, result: { code: number }): void {
  const ca = program.command('ca').description('the gateway certificate authority: hierarchy, issuance, revocation, CRL');
  const common = (c: Command) => c.option('-c, --config <path>', CONFIG_OPTION_HELP).option('--json', 'machine-readable output');

  common(ca.command('init').description('create the root and issuing CAs (never overwrites an existing CA)')).action(async (o: Common) => {
    result.code = await run(
      o,
      (config) => {
        if (caExists(config.ca.dir)) throw new CertError('CA_ALREADY_INITIALISED', `a CA already exists in ${config.ca.dir}`);
        initFromConfig(config.ca, config.agent.id, resolvePassphrase(config.ca));
        return caStatus(config.ca.dir);
      },
      (s: ReturnType<typeof caStatus>) =>
        `CA created in its directory:\n${s.map((c) => `  ${c.role}: ${c.subject} (${c.keyType}, until ${c.notAfter})`).join('\n')}\n`,
    );
  });

  common(
    ca
      .command('passphrase')
      .description('re-encrypt every CA key with a new passphrase (or none, or the same one), reading them with the configured one')
      .option('--new-passphrase-file <file>', 'file whose first line is the new passphrase (at least 12 characters)')
      .option('--unencrypted', 'store the keys without encryption instead')
      .option('--keep-passphrase', "keep the configured passphrase: re-encrypt with today's work factor (keys written before it)"),
  ).action(async (o: Common & { newPassphraseFile?: string; unencrypted?: boolean; keepPassphrase?: boolean }) => {
    result.code = await run(
      o,
      (config) => {
        if ([o.newPassphraseFile, o.unencrypted, o.keepPassphrase].filter(Boolean).length !== 1)
          throw new UsageError('give exactly one of --new-passphrase-file FILE, --unencrypted and --keep-passphrase');
        const current = resolvePassphrase(config.ca);
        let next: string | undefined;
        if (o.keepPassphrase) {
          if (current === undefined)
            throw new UsageError(
              '--keep-passphrase needs the current passphrase configured (ca.passphraseFile, EDGE_AGENT_CA_PASSPHRASE or the ca-passphrase credential)',
            );
          next = current;
        } else if (o.newPassphraseFile) {
          if (!existsSync(o.newPassphraseFile)) throw new UsageError(`${o.newPassphraseFile} does not exist`);
          next = readFileSync(o.newPassphraseFile, 'utf8').split(/\r?\n/)[0] ?? '';
          if (next.length < 12) throw new UsageError('the new passphrase must be at least 12 characters');
        }
        checkKeyFilePermissions(config.ca.dir);
        const files = reencryptKeyFiles(config.ca.dir, current, next);
        return { files, encrypted: next !== undefined, passphraseChanged: !o.keepPassphrase };
      },
      (r: { files: string[]; encrypted: boolean; passphraseChanged: boolean }) =>
        !r.passphraseChanged
          ? `re-encrypted ${r.files.length} key file(s) with the same passphrase\n`
          : `${r.encrypted ? 're-encrypted' : 'decrypted'} ${r.files.length} key file(s); ` +
            'point ca.passphraseFile, EDGE_AGENT_CA_PASSPHRASE or the ca-passphrase credential ' +
            `at the ${r.encrypted ? 'new passphrase' : 'nothing'} before the next start\n`,
    );
  });

  common(ca.command('status').description('show the CA chain, key types, validities and what expires when')).action(async (o: Common) => {
    result.code = await run(
      o,
      (config) => {
        checkKeyFilePermissions(config.ca.dir);
        return caStatus(config.ca.dir);
      },
      (s: ReturnType<typeof caStatus>) =>
        s.length === 0
          ? 'no CA yet: run edge-agent ca init\n'
          : s
              .map(
                (c) =>
                  `${c.role}\n  subject   ${c.subject}\n  issuer    ${c.issuer}\n  key       ${c.keyType}\n` +
                  `  valid     ${c.notBefore} to ${c.notAfter} (${c.daysLeft} days left)\n` +
                  `${c.pathLength === undefined ? '' : `  pathlen   ${c.pathLength}\n`}` +
                  `${c.chain ? `  chain     ${c.chain.join(' <- ')}\n` : ''}  sha256    ${c.sha256}\n`,
              )
              .join('\n'),
    );
  });

  common(
    ca
      .command('issue')
      .description('issue a certificate from a CSR, or generate the key for a device that cannot make one')
      .requiredOption('--profile <name>', `profile: ${PROFILE_NAMES.join(', ')}`)
      .requiredOption('--id <identity>', 'device id, applicationUri (opcua-application) or gateway name')
      .option('--csr <file>', 'PKCS#10 request, PEM or DER')
      .option('--generate-key', 'make the key here (for devices that cannot make a CSR); needs --out')
      .option('--key-type <type>', `key for --generate-key: ${CA_KEY_TYPES.join(', ')}`, 'ec-p256')
      .option('--out <path>', 'with --csr: file for the certificate; with --generate-key: directory for key, certificate and chain')
      .option('--p12', 'with --generate-key: also write a PKCS#12 bundle (RSA keys only), protected by --p12-passphrase-file')
      .option('--p12-passphrase-file <file>', 'file whose first line protects the PKCS#12 bundle')
      .option('--cn <name>', 'common name where the identity is not one (OPC UA application name)')
      .option('--dns <name>', 'SAN DNS name (repeatable; opcua-application, broker-server, agent-client)', collect)
      .option('--ip <address>', 'SAN IP address (repeatable; opcua-application, broker-server)', collect)
      .option('--renew', 'issue a new certificate even if the identity holds one for this key (if ca.allowKeyReuse)'),
  ).action(
    async (
      o: Common & {
        profile: string;
        id: string;
        csr?: string;
        generateKey?: boolean;
        keyType: string;
        out?: string;
        p12?: boolean;
        p12PassphraseFile?: string;
        cn?: string;
        dns?: string[];
        ip?: string[];
        renew?: boolean;
      },
    ) => {
      result.code = await run(
        o,
        (config) => {
          // The command line is checked before the store or any key is opened.
          if (Boolean(o.csr) === Boolean(o.generateKey)) throw new UsageError('give exactly one of --csr FILE and --generate-key');
          if (o.generateKey && !o.out) throw new UsageError('--generate-key needs --out DIR');
          if (o.p12 && !o.generateKey) throw new UsageError('--p12 goes with --generate-key');
          if (o.p12 && !o.p12PassphraseFile) throw new UsageError('--p12 needs --p12-passphrase-file FILE');
          if (!(CA_KEY_TYPES as readonly string[]).includes(o.keyType)) throw new UsageError(`--key-type is one of ${CA_KEY_TYPES.join(', ')}`);
          if (o.p12 && !o.keyType.startsWith('rsa'))
            throw new UsageError('--p12 needs an RSA key (--key-type rsa-2048 or larger): PKCS#12 here is written with node-forge, which has no EC');
          if (o.csr && !existsSync(o.csr)) throw new UsageError(`${o.csr} does not exist`);
          const p12Passphrase = o.p12 ? readP12Passphrase(o.p12PassphraseFile!) : undefined;
          return withAuthority(config, async (authority) => {
            const key = o.generateKey ? SoftwareKey.generate(o.keyType as CaKeyType) : undefined;
            const csr = prepare(key ? buildCsr(key, encodeName({ commonName: o.id.slice(0, 64) })) : readFileSync(o.csr!));
            const issued = await authority.issue({
              profile: o.profile,
              identity: o.id,
              csr,
              ...(o.cn ? { commonName: o.cn } : {}),
              ...(o.dns ? { dnsNames: o.dns } : {}),
              ...(o.ip ? { ipAddresses: o.ip } : {}),
              ...(o.renew ? { renew: true } : {}),
            });
            const files: string[] = [];
            if (key && o.out) {
              mkdirSync(o.out, { recursive: true, mode: 0o700 });
              writeKeyFile(join(o.out, 'key.pem'), key.exportable(), undefined);
              writeFileAtomic(join(o.out, 'cert.pem'), issued.record.pem, 0o644);
              writeFileAtomic(join(o.out, 'chain.pem'), issued.chain.join(''), 0o644);
              files.push(join(o.out, 'key.pem'), join(o.out, 'cert.pem'), join(o.out, 'chain.pem'));
              if (p12Passphrase !== undefined) {
                // node-forge reads RSA certificates only: CA certificates with EC keys
                // (the default root) stay out of the bundle and are in chain.pem.
                const certs = [issued.record.pem, ...issued.chain].flatMap((p) => {
                  try {
                    return [forge.pki.certificateFromPem(p)];
                  } catch {
                    return [];
                  }
                });
                const p12 = forge.pkcs12.toPkcs12Asn1(
                  forge.pki.privateKeyFromPem(key.exportable().export({ format: 'pem', type: 'pkcs1' }) as string),
                  certs,
                  p12Passphrase,
                  { algorithm: 'aes256', friendlyName: o.id },
                );
                writeFileAtomic(join(o.out, 'bundle.p12'), Buffer.from(forge.asn1.toDer(p12).getBytes(), 'binary'), 0o600);
                files.push(join(o.out, 'bundle.p12'));
              }
            } else if (o.out) {
              writeFileAtomic(o.out, issued.record.pem + issued.chain.join(''), 0o644);
              files.push(o.out);
            }
            return {
              serial: issued.record.serial,
              profile: issued.record.profile,
              identity: issued.record.identity,
              notAfter: issued.record.notAfter,
              thumbprint: issued.record.thumbprint,
              supersedes: issued.supersedes,
              repeated: issued.repeated === true,
              files,
              ...(files.length === 0 ? { certificate: issued.record.pem, chain: issued.chain } : {}),
            };
          });
        },
        (r: { serial: string; files: string[]; certificate?: string; chain?: string[] }) =>
          r.files.length > 0 ? `issued serial ${r.serial}: ${r.files.join(', ')}\n` : `${r.certificate}${r.chain!.join('')}`,
      );
    },
  );

  common(
    ca
      .command('revoke')
      .description('revoke a certificate and publish the new CRL')
      .argument('[serial]', 'serial number in hex (colons allowed)')
      .option('--id <identity>', 'revoke the valid certificate of this identity instead (with --profile)')
      .option('--profile <name>', 'profile of --id')
      .requiredOption('--reason <reason>', `one of ${Object.keys(REVOCATION_REASON_CODES).join(', ')}`),
  ).action(async (serial: string | undefined, o: Common & { id?: string; profile?: string; reason: string }) => {
    result.code = await run(
      o,
      (config) =>
        withAuthority(config, (authority, { certificates: repo }) => {
          if (!(o.reason in REVOCATION_REASON_CODES)) throw new UsageError(`--reason is one of ${Object.keys(REVOCATION_REASON_CODES).join(', ')}`);
          if (Boolean(serial) === Boolean(o.id)) throw new UsageError('give a serial or --id (with --profile), not both');
          let target = serial ? normaliseSerial(serial) : undefined;
          if (o.id) {
            if (!o.profile || !(PROFILE_NAMES as readonly string[]).includes(o.profile))
              throw new UsageError(`--id needs --profile, one of ${PROFILE_NAMES.join(', ')}`);
            const current = repo.current(o.profile as ProfileName, o.id);
            if (!current) throw new CertError('CERT_NOT_FOUND', `${o.profile} identity ${JSON.stringify(o.id)} has no valid certificate`);
            target = current.serial;
          }
          const { revoked: record, alsoRevoked } = authority.revoke(target!, o.reason as RevocationReason);
          let crl: ReturnType<typeof publishCrlFile>;
          try {
            crl = publishCrlFile(authority, config.ca);
          } catch (err) {
            // The revocation is committed; only the CRL is behind. Say so rather than hide it.
            throw new CertError(
              'CRL_NOT_WRITTEN',
              `certificate ${record.serial} is revoked, but the CRL could not be written (${(err as Error).message}); run edge-agent ca crl`,
            );
          }
          return {
            serial: record.serial,
            identity: record.identity,
            revokedAt: record.revokedAt,
            reason: record.revocationReason,
            alsoRevoked: alsoRevoked.map((r) => ({ serial: r.serial, profile: r.profile, identity: r.identity })),
            crlFile: config.ca.crlFile,
            crlNumbers: crl.crlNumbers,
          };
        }),
      (r: { serial: string; crlFile: string; alsoRevoked: { serial: string; identity: string }[] }) =>
        `revoked ${r.serial}` +
        `${r.alsoRevoked.length ? ` and, with the same compromised key, ${r.alsoRevoked.map((a) => `${a.serial} (${a.identity})`).join(', ')}` : ''}` +
        `; CRL written to ${r.crlFile}\n`,
    );
  });

  common(
    ca
      .command('crl')
      .description("regenerate the CRLs now (the root's too, where its key is here) and print them")
      .option('--out <file>', 'also write it to this file'),
  ).action(async (o: Common & { out?: string }) => {
    result.code = await run(
      o,
      (config) =>
        withAuthority(config, (authority) => {
          // On demand: how the root CRL is kept valid while the root key lives offline (brought back for this).
          const passphrase = resolvePassphrase(config.ca);
          refreshRootCrl(config.ca.dir, config.ca.rootCrlValidityDays, () => loadRoot(config.ca.dir, passphrase), { force: true });
          const crl = publishCrlFile(authority, config.ca);
          const pem = readFileSync(config.ca.crlFile, 'utf8');
          if (o.out) writeFileSync(o.out, pem, { mode: 0o644 });
          return { crlFile: config.ca.crlFile, nextUpdate: crl.nextUpdate, crlNumbers: crl.crlNumbers, pem };
        }),
      (r: { pem: string }) => r.pem,
    );
  });

  registerRevokeIssuing(ca, common, result, withAuthority);

  common(
    ca
      .command('list')
      .description('list issued certificates')
      .option('--expiring <duration>', 'only valid certificates expiring within this time: 12h, 30d, 2w')
      .option('--profile <name>', 'only this profile')
      .option('--id <identity>', 'only this identity')
      .option('--status <status>', 'valid, revoked or superseded'),
  ).action(async (o: Common & { expiring?: string; profile?: string; id?: string; status?: string }) => {
    result.code = await run(
      o,
      (config) => {
        if (o.status && !['valid', 'revoked', 'superseded'].includes(o.status)) throw new UsageError('--status is valid, revoked or superseded');
        // A read: never creates or migrates the database (docs/operations.md).
        return readStore(config, (_store, repos) => {
          const rows = repos.certificates.list({
            ...(o.profile ? { profile: o.profile as ProfileName } : {}),
            ...(o.id ? { identity: o.id } : {}),
            ...(o.status ? { status: o.status as CertificateRecord['status'] } : {}),
            ...(o.expiring ? { expiringBefore: new Date(Date.now() + parseDuration(o.expiring)) } : {}),
          });
          return rows.map(({ pem: _pem, ...rest }) => rest);
        });
      },
      (rows: CertificateRecord[]) => table(rows),
    );
  });

  common(
    ca
      .command('request-intermediate')
      .description('make a key and a CSR for an issuing CA, to be signed by the enterprise PKI')
      .option('--issuer <name>', 'ec or rsa', 'ec')
      .option('--key-type <type>', `key type: ${CA_KEY_TYPES.join(', ')} (default: ca.issuingKeyType / ca.rsaIssuingKeyType)`)
      .option('--out <file>', 'also write the CSR here'),
  ).action(async (o: Common & { issuer: string; keyType?: string; out?: string }) => {
    result.code = await run(
      o,
      (config) => {
        if (o.issuer !== 'ec' && o.issuer !== 'rsa') throw new UsageError('--issuer is ec or rsa');
        const keyType = (o.keyType ?? (o.issuer === 'ec' ? config.ca.issuingKeyType : config.ca.rsaIssuingKeyType)) as CaKeyType;
        if (!CA_KEY_TYPES.includes(keyType)) throw new UsageError(`--key-type is one of ${CA_KEY_TYPES.join(', ')}`);
        if (o.issuer === 'rsa' && !keyType.startsWith('rsa')) throw new UsageError('the rsa issuer needs an RSA key type');
        const csr = requestIntermediate({
          dir: config.ca.dir,
          name: o.issuer,
          keyType,
          organization: config.ca.organization,
          gatewayId: config.agent.id,
          passphrase: resolvePassphrase(config.ca),
        });
        if (o.out) writeFileSync(o.out, csr);
        return { issuer: o.issuer, csr, csrFile: join(config.ca.dir, `issuing-${o.issuer}.csr`) };
      },
      (r: { csr: string }) => r.csr,
    );
  });

  common(
    ca
      .command('import-intermediate')
      .description('install an issuing CA certificate signed by the enterprise PKI (checked against the key and the chain first)')
      .argument('<cert>', 'the signed certificate (PEM)')
      .option('--chain <file>', 'the enterprise CA certificates above it, up to the root (PEM)')
      .option('--issuer <name>', 'ec or rsa', 'ec'),
  ).action(async (cert: string, o: Common & { chain?: string; issuer: string }) => {
    result.code = await run(
      o,
      (config) => {
        if (o.issuer !== 'ec' && o.issuer !== 'rsa') throw new UsageError('--issuer is ec or rsa');
        if (!existsSync(cert)) throw new UsageError(`${cert} does not exist`);
        return importIntermediate({
          dir: config.ca.dir,
          name: o.issuer,
          certPem: readFileSync(cert, 'utf8'),
          ...(o.chain ? { chainPem: readFileSync(o.chain, 'utf8') } : {}),
          passphrase: resolvePassphrase(config.ca),
        });
      },
      (r: { subject: string; notAfter: Date }) => `imported ${r.subject}, valid until ${r.notAfter.toISOString()}\n`,
    );
  });
}
