/**
 * The command line of the device simulator: `scripts/simulate/mqtt-devices`
 * (see --help). The simulation itself is in mqttDevices.ts.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, type OutputConfiguration } from 'commander';
import { UsageError } from '../../agent/errors.js';
import type { ConfigEvent } from './configDevice.js';
import { SIMULATION_DEFAULTS, simulateDevices, validateOptions, type SimulationOptions, type SimulationResult } from './mqttDevices.js';

const percentile = (values: number[], p: number) => values.sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor((values.length * p) / 100))];

/** A few lines for a terminal: counts, rate, latencies and the first problems. */
export function formatSummary(result: SimulationResult): string {
  const { counts: c } = result;
  const lines = [
    `${result.devices.length} device(s) in ${(result.durationMs / 1000).toFixed(1)} s: ` +
      `${c.issued} issued, ${c.pending} pending, ${c.rejected} rejected, ${c.failed} failed; ${result.enrollmentsPerSecond.toFixed(1)} enrollments/s`,
  ];
  if (result.workers > 1 || result.prepareMs !== undefined) {
    const prepared = result.prepareMs === undefined ? '' : `; keys and CSRs made beforehand in ${(result.prepareMs / 1000).toFixed(1)} s, outside the time`;
    lines.push(`${result.workers} thread(s)${prepared}`);
  }
  const series: [string, number[]][] = [
    ['enrollment', result.devices.flatMap((d) => (d.enrolledMs === undefined ? [] : [d.enrolledMs]))],
    ['mutual-TLS hello', result.devices.flatMap((d) => (d.connectedMs === undefined ? [] : [d.connectedMs]))],
    ['reconnection', result.devices.flatMap((d) => d.reconnectedMs ?? [])],
  ];
  for (const [what, values] of series) {
    if (values.length > 0) lines.push(`${what}: p50 ${percentile(values, 50)} ms, p95 ${percentile(values, 95)} ms, max ${percentile(values, 100)} ms`);
  }
  const reconnections = result.devices.reduce((n, d) => n + (d.reconnectedMs?.length ?? 0), 0);
  if (reconnections > 0) lines.push(`TLS session resumed on ${result.devices.reduce((n, d) => n + (d.resumed ?? 0), 0)} of ${reconnections} reconnection(s)`);
  const problems = result.devices.filter((d) => d.status !== 'issued');
  for (const d of problems.slice(0, 10)) lines.push(`  ${d.id} ${d.status}${d.reason ? `: ${d.reason}` : ''}`);
  if (problems.length > 10) lines.push(`  ... and ${problems.length - 10} more (--json lists every device)`);
  return `${lines.join('\n')}\n`;
}

const integer = (text: string): number => {
  if (!/^\d+$/.test(text)) throw new InvalidArgumentError('It must be a whole number.');
  return Number(text);
};

export interface CommandLine {
  options: SimulationOptions;
  json: boolean;
}

/**
 * Reads the arguments after the script name. Returns undefined when help was
 * printed; throws UsageError (exit 64) for anything wrong, every problem at once.
 */
export function parseArguments(args: string[], output: OutputConfiguration = {}): CommandLine | undefined {
  const program = new Command('mqtt-devices')
    .description('Simulated MQTT devices enrolling with the edge agent: CSR over the provisioning listener, then a hello over mutual TLS')
    .requiredOption('--provisioning-url <url>', 'provisioning listener, mqtt:// or mqtts://')
    .option('--ca <file>', 'PEM bundle to verify the brokers with (needed for any TLS)')
    .option('--mtls-url <url>', 'mutual-TLS listener, instead of the brokerUrl of the answer')
    .option('-n, --count <n>', `number of devices (default ${SIMULATION_DEFAULTS.count})`, integer)
    .option('--concurrency <n>', `devices enrolling at once, all threads together (default ${SIMULATION_DEFAULTS.concurrency})`, integer)
    .option('--workers <n>', 'worker threads sharing the devices, so the simulator is not the bottleneck; one per core is a start (default 1)', integer)
    .option('--pregenerate', 'make every key and CSR before the clock starts (the rate then measures enrollment alone)')
    .option('--reconnects <n>', 'after the hello, reconnect to the mutual-TLS listener N times, a hello each time (default 0)', integer)
    .option('--resume-tls', "reconnections resume the device's own previous TLS session (never across devices or listeners)")
    .option('--id-prefix <prefix>', `device ids are the prefix and a 5-digit index (default ${SIMULATION_DEFAULTS.idPrefix})`)
    .option('--start-index <n>', 'index of the first device (default 0)', integer)
    .option('--topic-prefix <prefix>', `provisioning topic prefix (default ${SIMULATION_DEFAULTS.topicPrefix})`)
    .option('--token <token>', 'enrollment token sent with every request')
    .option('--token-file <file>', 'file whose first line is the enrollment token (keeps it out of ps)')
    .option('--manufacturer <name>', `nameplate manufacturer (default ${SIMULATION_DEFAULTS.manufacturer})`)
    .option('--model <name>', `nameplate model (default ${SIMULATION_DEFAULTS.model})`)
    .option('--mqtt5', 'MQTT 5 with responseTopic and correlationData on the request (default MQTT 3.1.1)')
    .option('--timeout-ms <ms>', `budget for one device's whole flow (default ${SIMULATION_DEFAULTS.timeoutMs})`, integer)
    .option('--no-wait', "stop at a 'pending' answer instead of waiting for approval")
    .option('--skip-mtls', 'stop once the certificate is issued')
    .option('--out <dir>', 'write each issued device its key.pem, cert.pem and chain.pem under DIR/ID/')
    .option('--take-config', 'after the hello, stay connected and apply the configuration the agent publishes (until Ctrl-C)')
    .option('--config-topic-root <root>', 'configuration.topicRoot of the agent (default config)')
    .option('--refuse-config <ids|fraction>', 'devices that refuse every configuration: comma-separated ids, or a fraction such as 0.1')
    .option('--refuse-error <text>', 'the error a refusing device reports')
    .option('--json', 'print the whole result as JSON')
    .addHelpText(
      'after',
      [
        '',
        'Ctrl-C stops early (devices still running fail); a second one exits at once.',
        'With --take-config the devices keep running after the summary, print one line per',
        'configuration applied or refused, and stop at Ctrl-C.',
        '',
        'Exit codes:',
        '  0    every device completed the flow',
        '  1    some device did not (pending, rejected, failed)',
        '  64   bad command line',
      ].join('\n'),
    )
    .exitOverride()
    .configureOutput({ outputError: () => {}, ...output });
  try {
    program.parse(args, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError && err.exitCode === 0) return undefined;
    if (err instanceof CommanderError) throw new UsageError(err.message.replace(/^error: /, ''));
    throw err;
  }
  const { ca, out, tokenFile, mqtt5, wait, skipMtls, json, takeConfig, configTopicRoot, refuseConfig, refuseError, ...same } = program.opts<
    Omit<SimulationOptions, 'caFile' | 'outDir' | 'protocolVersion' | 'waitForApproval' | 'skipMtls'> & {
      takeConfig?: boolean;
      configTopicRoot?: string;
      refuseConfig?: string;
      refuseError?: string;
      provisioningUrl: string;
      ca?: string;
      out?: string;
      tokenFile?: string;
      mqtt5?: boolean;
      wait: boolean;
      skipMtls?: boolean;
      json?: boolean;
    }
  >();
  if (tokenFile !== undefined) {
    if (same.token !== undefined) throw new UsageError('give at most one of --token and --token-file');
    if (!existsSync(tokenFile)) throw new UsageError(`${tokenFile} does not exist`);
    same.token = readFileSync(tokenFile, 'utf8').split(/\r?\n/)[0] ?? '';
  }
  const options: SimulationOptions = {
    ...same,
    ...(ca === undefined ? {} : { caFile: ca }),
    ...(out === undefined ? {} : { outDir: out }),
    protocolVersion: mqtt5 ? 5 : 4,
    waitForApproval: wait,
    skipMtls: skipMtls === true,
  };
  if (takeConfig) {
    options.configuration = {
      ...(configTopicRoot === undefined ? {} : { topicRoot: configTopicRoot }),
      ...(refuseConfig === undefined ? {} : { refuse: /^(0|1|0?\.\d+)$/.test(refuseConfig) ? Number(refuseConfig) : refuseConfig.split(',').filter(Boolean) }),
      ...(refuseError === undefined ? {} : { refuseError }),
    };
  } else if (configTopicRoot !== undefined || refuseConfig !== undefined || refuseError !== undefined) {
    throw new UsageError('--config-topic-root, --refuse-config and --refuse-error go with --take-config');
  }
  const problems = validateOptions(options);
  if (problems.length === 1) throw new UsageError(problems[0]!);
  if (problems.length > 1) throw new UsageError(`${problems.length} problems:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  return { options, json: json === true };
}

async function main(args: string[]): Promise<number> {
  let line: CommandLine | undefined;
  try {
    line = parseArguments(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`mqtt-devices: ${err.message}\n(run with --help for usage)\n`);
    return 64;
  }
  if (!line) return 0;
  const interrupt = new AbortController();
  // once: a second Ctrl-C takes the default action and ends the process at once.
  process.once('SIGINT', () => interrupt.abort());
  let result: SimulationResult;
  const configuration = line.options.configuration && {
    ...line.options.configuration,
    onEvent: (e: ConfigEvent) => {
      if (e.kind === 'repeated') return;
      const what = e.profile === undefined ? '' : ` ${e.profile} v${e.version}`;
      process.stdout.write(line!.json ? `${JSON.stringify(e)}\n` : `${e.id} ${e.kind}${what}${e.error ? `: ${e.error}` : ''}\n`);
    },
  };
  try {
    result = await simulateDevices({ ...line.options, ...(configuration ? { configuration } : {}), signal: interrupt.signal });
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`mqtt-devices: ${err.message}\n`);
    return 64;
  }
  const { configured, ...printed } = result;
  process.stdout.write(line.json ? `${JSON.stringify(printed, null, 2)}\n` : formatSummary(result));
  if (configured) {
    if (!interrupt.signal.aborted) {
      process.stderr.write(`mqtt-devices: ${configured.size} device(s) take configuration; Ctrl-C stops them\n`);
      await new Promise((resolve) => interrupt.signal.addEventListener('abort', resolve, { once: true }));
    }
    await Promise.all([...configured.values()].map((d) => d.stop()));
  }
  return result.counts.issued === result.devices.length ? 0 : 1;
}

const isMain = (() => {
  try {
    // realpath: the ESM loader resolves symlinks in import.meta.url, argv[1] keeps them.
    return process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
})();

if (isMain) {
  main(process.argv.slice(2)).then(
    // Exit after stdout drained: a large --json result into a pipe must not be cut.
    (code) => process.stdout.write('', () => process.exit(code)),
    (err: unknown) => {
      process.stderr.write(`mqtt-devices: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
