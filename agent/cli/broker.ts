import { hostname } from 'node:os';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import pino from 'pino';
import { writeMosquittoConfig } from '../broker/mosquittoConfig.js';
import { loadAuthority, publishCrlFile } from '../ca/loadCa.js';
import { resolvePassphrase } from '../ca/passphrase.js';
import { UsageError } from '../errors.js';
import { openRepositories } from '../store/repositories.js';
import { configRootProblem } from '../transport/brokerAcl.js';
import { Store } from '../store/database.js';
import { collect, CONFIG_OPTION_HELP, run, type Common } from './common.js';

function port(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 65_535) throw new UsageError(`${what} must be a port number from 1 to 65535`);
  return n;
}

export function registerBrokerCommands(program: Command, result: { code: number }): void {
  const broker = program.command('broker').description('set up the MQTT broker the devices use');
  broker
    .command('mosquitto-config')
    .description('write what an external Mosquitto 2 needs: CA chain, server certificate and key, CRL, ACLs, mosquitto.conf')
    .requiredOption('--out <dir>', 'directory to write the files to')
    .option('--dns <name>', 'DNS name of the broker in its certificate (repeatable; default: the host name and localhost)', collect)
    .option('--ip <address>', 'IP address of the broker in its certificate (repeatable; default: 127.0.0.1)', collect)
    .option('--bind <address>', 'address both listeners bind to', '127.0.0.1')
    .option('--provisioning-port <port>', 'TLS listener for enrollment, no client certificate', '8883')
    .option('--mtls-port <port>', 'mutual-TLS listener for enrolled devices and the agent', '8884')
    .option('--topic-prefix <prefix>', 'provisioning topic prefix (default: mqtt.topicPrefix)')
    .option('-c, --config <path>', CONFIG_OPTION_HELP)
    .option('--json', 'machine-readable output')
    .action(
      async (o: Common & { out: string; dns?: string[]; ip?: string[]; bind: string; provisioningPort: string; mtlsPort: string; topicPrefix?: string }) => {
        result.code = await run(
          o,
          async (config) => {
            const provisioningPort = port(o.provisioningPort, '--provisioning-port');
            const mtlsPort = port(o.mtlsPort, '--mtls-port');
            if (provisioningPort === mtlsPort) throw new UsageError('the two listeners need different ports');
            if (o.topicPrefix !== undefined && !/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(o.topicPrefix))
              throw new UsageError('--topic-prefix is topic levels of A-Z a-z 0-9 _ - separated by /');
            const clash = configRootProblem(config.configuration.topicRoot, o.topicPrefix ?? config.mqtt.topicPrefix);
            if (clash) throw new UsageError(clash);
            const { store } = Store.open(config.store, pino({ level: 'silent' }));
            try {
              const repos = openRepositories(store);
              const authority = loadAuthority(config.ca, repos.certificates, resolvePassphrase(config.ca));
              publishCrlFile(authority, config.ca);
              const files = await writeMosquittoConfig(authority, {
                out: resolve(o.out),
                serverName: config.agent.id,
                dnsNames: o.dns ?? [hostname().toLowerCase(), 'localhost'].filter((n, i, a) => /^[a-z0-9.-]+$/.test(n) && a.indexOf(n) === i),
                ipAddresses: o.ip ?? ['127.0.0.1'],
                bind: o.bind,
                provisioningPort,
                mtlsPort,
                agentId: config.agent.id,
                topicPrefix: o.topicPrefix ?? config.mqtt.topicPrefix,
                configTopicRoot: config.configuration.topicRoot,
                cutOff: repos.devices
                  .list({ protocol: 'mqtt' })
                  .filter((d) => d.state === 'revoked' || d.state === 'decommissioned')
                  .map((d) => d.name),
                crlFile: config.ca.crlFile,
              });
              return { ...files, crlKeptCurrent: config.ca.crlFile === files.crlfile };
            } finally {
              store.close();
            }
          },
          (r: Awaited<ReturnType<typeof writeMosquittoConfig>> & { crlKeptCurrent: boolean }) => {
            const crlNote = r.crlKeptCurrent
              ? 'the agent keeps crl.pem current'
              : `set ca.crlFile: ${r.crlfile} so that revocations reach Mosquitto (then restart it)`;
            return (
              `wrote ${r.conf} and its certificates, key and ACLs; ${crlNote}\n` +
              `the key is 0600: give the directory to the mosquitto user (chown -R mosquitto ${resolve(o.out)})\n`
            );
          },
        );
      },
    );
}
