import type { Command } from 'commander';
import { CA_REVOCATION_REASONS, type CaRevocationReason } from '../../certs/revokedCas.js';
import { revokeIssuingCa, type IssuingRevocation } from '../../certs/revokeIssuing.js';
import { publishCrlFile } from '../ca/loadCa.js';
import { resolvePassphrase } from '../ca/passphrase.js';
import { RefusedError, UsageError } from '../errors.js';
import { daemonRunning } from '../lifecycle/instanceLock.js';
import { localAudit, run, type Common } from './common.js';
// Only its type: ca.ts registers this command and passes withAuthority in; importing the function back would make an import cycle.
import type { withAuthority as caWithAuthority } from './ca.js';

/**
 * `edge-agent ca revoke-issuing`: revokes a local issuing CA (the root CRL
 * lists it) and makes its successor. With the daemon stopped: it holds the
 * issuing CA in memory and would go on signing with it.
 */
export function registerRevokeIssuing(ca: Command, common: (c: Command) => Command, result: { code: number }, withAuthority: typeof caWithAuthority): void {
  common(
    ca
      .command('revoke-issuing')
      .description('revoke a local issuing CA with the root key, list it in the root CRL and make a new one in its place (agent stopped)')
      .requiredOption('--issuer <name>', 'ec or rsa')
      .requiredOption('--reason <reason>', `one of ${CA_REVOCATION_REASONS.join(', ')}`),
  ).action(async (o: Common & { issuer: string; reason: string }) => {
    result.code = await run(
      o,
      async (config) => {
        if (o.issuer !== 'ec' && o.issuer !== 'rsa') throw new UsageError('--issuer is ec or rsa');
        if (!(CA_REVOCATION_REASONS as readonly string[]).includes(o.reason)) throw new UsageError(`--reason is one of ${CA_REVOCATION_REASONS.join(', ')}`);
        if (daemonRunning(config.agent.dataDir))
          throw new RefusedError('the agent is running and signs with this issuing CA: stop it first (systemctl stop edge-agent), then run this again');
        const revocation = revokeIssuingCa({
          dir: config.ca.dir,
          name: o.issuer,
          reason: o.reason as CaRevocationReason,
          passphrase: resolvePassphrase(config.ca),
          rootCrlValidityDays: config.ca.rootCrlValidityDays,
          successor: {
            keyType: o.issuer === 'ec' ? config.ca.issuingKeyType : config.ca.rsaIssuingKeyType,
            organization: config.ca.organization,
            gatewayId: config.agent.id,
            issuingValidityDays: config.ca.issuingValidityDays,
          },
        });
        // The revocation stands once the root CRL is written; the published CRL file follows.
        const crl = await withAuthority(config, (authority, repos, store) => {
          store.durable(() =>
            localAudit(repos.audit, 'ca.revoke-issuing', `issuing-${o.issuer}`, {
              serial: revocation.revoked.serial,
              reason: revocation.revoked.reason,
              successor: revocation.successor.subject,
            }),
          );
          return publishCrlFile(authority, config.ca);
        });
        return { ...revocation, crlFile: config.ca.crlFile, crlNumbers: crl.crlNumbers };
      },
      (r: IssuingRevocation & { crlFile: string }) =>
        [
          `revoked ${r.revoked.subject} (serial ${r.revoked.serial}, ${r.revoked.reason}); ` +
            `the root CRL lists it until ${r.rootCrl.nextUpdate.toISOString()} and is published in ${r.crlFile}`,
          `new issuing CA: ${r.successor.subject}, valid until ${r.successor.notAfter.toISOString()}`,
          'every certificate the revoked CA issued is now invalid to validators that check the root CRL: ' +
            'start the agent and re-enroll its devices (docs/ca.md, "Revoking an issuing CA")',
          '',
        ].join('\n'),
    );
  });
}
