import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { Command } from 'commander';
import pino from 'pino';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { writeFileAtomic, writeKeyFile } from '../../certs/keys/fileKey.js';
import { prepare } from '../../certs/request.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import { pemBlocks } from '../../certs/x509/pem.js';
import { ensureAgentClient } from '../ca/localIdentity.js';
import { publishCrlFile } from '../ca/loadCa.js';
import { withAuthority } from './ca.js';
import type { Config } from '../config/schema.js';
import { RefusedError, UsageError } from '../errors.js';
import { daemonRunning } from '../lifecycle/instanceLock.js';
import type { DiscoveryRunRepository, DiscoveryRun, DiscoveryTarget } from '../store/discoveryRunRepository.js';
import type { PushJob, PushStepRecord } from '../store/pushRepository.js';
import { actorLabel, CONFIG_OPTION_HELP, localAudit, readStore, run, withStore, type Common } from './common.js';

/** The discovery runs, on the database opened for a change, or read-only for a read. */
function withRuns<T>(config: Config, fn: (runs: DiscoveryRunRepository) => T | Promise<T>, how: 'read' | 'change' = 'change'): Promise<T> {
  return (how === 'read' ? readStore : withStore)(config, (_store, repos) => fn(repos.discoveryRuns));
}

const line = (r: DiscoveryRun) =>
  `run ${r.id} (${r.trigger}, ${r.actor}): ${r.status}, ${r.targetsDone}/${r.targetsTotal} targets, ` +
  `${r.found} found, ${r.errors} errors${r.error ? ` (${r.error})` : ''}`;

const targetLines = (targets: DiscoveryTarget[]) =>
  targets
    .map((t) => `  ${t.status.padEnd(7)} ${t.source.padEnd(8)} ${t.target}${t.deviceId ? ` -> ${t.deviceId}` : ''}${t.detail ? `  (${t.detail})` : ''}`)
    .join('\n');

type RunView = { run: DiscoveryRun; targets: DiscoveryTarget[]; daemonRunning?: boolean };

const view = (r: RunView) =>
  `${line(r.run)}\n${r.targets.length > 0 ? `${targetLines(r.targets)}\n` : ''}` +
  `${r.daemonRunning === false ? 'the daemon is not running: the run starts when it does\n' : ''}`;

/**
 * What an OPC UA server needs to let the agent in (for push management and
 * reading nameplates over secure channels): the agent's client certificate
 * to trust, the gateway CA certificates as issuers, and their CRLs, laid out
 * as the PKI folders most OPC UA stacks use. Makes the agent's client
 * identity if the daemon has not yet.
 */
async function clientBundle(config: Config, out: string) {
  if (existsSync(out) && readdirSync(out).length > 0) throw new UsageError(`${out} exists and is not empty; choose a new directory`);
  return withAuthority(config, async (authority, { certificates: repository }) => {
    const ca = { chainPem: () => authority.trustBundle().join(''), current: repository.current.bind(repository), issue: authority.issue.bind(authority) };
    const identity = await ensureAgentClient(ca, config, pino({ level: 'silent' }), 'opcua');
    if (!existsSync(config.ca.crlFile)) publishCrlFile(authority, config.ca);
    const crls = pemBlocks(readFileSync(config.ca.crlFile, 'utf8')).filter((b) => b.label === 'X509 CRL');
    const cas = authority.trustBundle().map((pem) => new X509Certificate(pem));
    const staging = `${out.replace(/\/+$/, '')}.tmp-${process.pid}`;
    for (const d of ['trusted/certs', 'issuers/certs', 'issuers/crl']) mkdirSync(join(staging, d), { recursive: true, mode: 0o755 });
    const leaf = new X509Certificate(identity.cert);
    const files = [join('trusted/certs', 'edge-agent-opcua-client.der')];
    writeFileAtomic(join(staging, files[0]!), leaf.raw, 0o644);
    cas.forEach((c, i) => {
      const name = join('issuers/certs', `gateway-ca-${i + 1}.der`);
      writeFileAtomic(join(staging, name), c.raw, 0o644);
      files.push(name);
    });
    crls.forEach((c, i) => {
      const name = join('issuers/crl', `gateway-ca-${i + 1}.crl`);
      writeFileAtomic(join(staging, name), c.der, 0o644);
      files.push(name);
    });
    if (existsSync(out)) rmdirSync(out);
    renameSync(staging, out);
    return {
      applicationUri: identity.applicationUri,
      serial: identity.serial,
      thumbprint: createHash('sha1').update(leaf.raw).digest('hex'),
      files: files.map((f) => join(out, f)),
    };
  });
}

const pushLine = (j: PushJob) =>
  `${j.deviceId}: ${j.status} at ${j.step}, ${j.attempts} attempt(s)${j.serial ? `, certificate ${j.serial}` : ''}` +
  `${j.crlDelivered === undefined ? '' : j.crlDelivered ? ', CRLs delivered' : ', CRLs not delivered'}` +
  `${j.nextAttemptAt && j.status !== 'stopped' ? `, next ${j.status === 'done' ? 'renewal' : 'attempt'} ${j.nextAttemptAt.toISOString()}` : ''}` +
  `${j.reason ? `\n  ${j.reason}` : ''}`;

const pushView = (r: { jobs: PushJob[]; steps?: PushStepRecord[] }) =>
  r.jobs.length === 0
    ? 'no server approved for push provisioning\n'
    : `${r.jobs.map(pushLine).join('\n')}\n` +
      `${(r.steps ?? []).map((s) => `  ${s.at.toISOString()} attempt ${s.attempt} ${s.step} ${s.outcome}${s.detail ? `: ${s.detail}` : ''}`).join('\n')}` +
      `${r.steps?.length ? '\n' : ''}`;

/**
 * For a server without push management: a key made here, a certificate
 * from the RSA issuing CA (opcua-application profile: SAN URI = the
 * server's applicationUri, plus the host of the endpoint it was found at),
 * and the chain, for a technician to install by hand. Recorded in the
 * device's history.
 */
async function exportBundle(config: Config, ref: string, out: string, actor: string) {
  const id = ref.startsWith('opcua:') ? ref : `opcua:${ref}`;
  return withAuthority(config, async (authority, repos, store) => {
    const { devices } = repos;
    const device = devices.get(id);
    if (!device) throw new UsageError(`no OPC UA server ${id} in the inventory (see edge-agent devices list)`);
    if (device.state === 'decommissioned') throw new UsageError(`${id} is decommissioned`);
    const opcua = device.source.opcua as { applicationUri?: string; endpointUrl?: string } | undefined;
    if (!opcua?.applicationUri || !opcua.endpointUrl) throw new UsageError(`${id} has no applicationUri on record; run a discovery first`);
    // The applicationUri is what the server said of itself: it must not name the agent.
    if (opcua.applicationUri.startsWith('urn:edge-agent:'))
      throw new RefusedError(`${id} claims the applicationUri ${opcua.applicationUri}, which belongs to the gateway; not exported`);
    if (existsSync(out) && readdirSync(out).length > 0)
      throw new UsageError(`${out} exists and is not empty; choose a new directory (a bundle is never overwritten)`);
    const host = new URL(opcua.endpointUrl).hostname.replace(/^\[|\]$/g, '');
    const commonName = (device.nameplate.displayName ?? device.name).slice(0, 64);
    const key = SoftwareKey.generate('rsa-2048');
    const issued = await authority.issue({
      profile: 'opcua-application',
      identity: opcua.applicationUri,
      commonName,
      csr: prepare(buildCsr(key, encodeName({ commonName }))),
      ...(isIP(host) ? { ipAddresses: [host] } : { dnsNames: [host.toLowerCase()] }),
    });
    // The files leave the process only after the export is on record: written beside the target, renamed into place last.
    const staging = `${out.replace(/\/+$/, '')}.tmp-${process.pid}`;
    mkdirSync(staging, { recursive: true, mode: 0o700 });
    const names = { key: 'key.pem', cert: 'cert.pem', certDer: 'cert.der', chain: 'chain.pem' };
    writeKeyFile(join(staging, names.key), key.exportable(), undefined);
    writeFileAtomic(join(staging, names.cert), issued.record.pem, 0o644);
    writeFileAtomic(join(staging, names.certDer), new X509Certificate(issued.record.pem).raw, 0o644);
    writeFileAtomic(join(staging, names.chain), issued.chain.join(''), 0o644);
    const files = Object.fromEntries(Object.entries(names).map(([k, v]) => [k, join(out, v)]));
    try {
      store.durable(() => {
        devices.apply({
          protocol: 'opcua',
          name: device.name,
          to: device.state,
          cause: `certificate ${issued.record.serial} exported by ${actor} for installation by hand`,
          actor: `technician:${actor}`,
          details: { serial: issued.record.serial, notAfter: issued.record.notAfter.toISOString() },
          seen: false,
        });
        // A private key leaves the gateway: on record in the audit log under the real login, with the label given.
        localAudit(repos.audit, 'opcua.exportBundle', id, { serial: issued.record.serial, by: actor, out });
      });
    } catch (err) {
      rmSync(staging, { recursive: true, force: true });
      throw err;
    }
    if (existsSync(out)) rmdirSync(out);
    renameSync(staging, out);
    return { device: id, serial: issued.record.serial, applicationUri: opcua.applicationUri, notAfter: issued.record.notAfter, files };
  });
}

export function registerOpcuaCommands(program: Command, result: { code: number }): void {
  const opcua = program.command('opcua').description('OPC UA servers: discovery runs, push provisioning');
  const common = (c: Command) => c.option('-c, --config <path>', CONFIG_OPTION_HELP).option('--json', 'machine-readable output');

  common(
    opcua
      .command('discover')
      .description('ask the daemon for a discovery run (configured endpoints, discovery servers, range scan) and follow it')
      .option('--actor <name>', 'who asks: a name recorded beside your login (as root through sudo, "root (sudo: <login>)"), which alone is the default')
      .option('--wait <seconds>', 'how long to follow the run; 0 returns at once', '300'),
  ).action(async (o: Common & { actor?: string; wait: string }) => {
    result.code = await run(
      o,
      async (config) => {
        const waitMs = Number(o.wait) * 1000;
        if (!Number.isFinite(waitMs) || waitMs < 0 || waitMs > 86_400_000) throw new UsageError('--wait takes seconds from 0 to 86400');
        if (!config.opcua.enabled) throw new RefusedError('OPC UA discovery is off (opcua.enabled: false); nothing would carry the run out');
        const finished = await withRuns(config, async (runs) => {
          let current = runs.request('opcua', 'technician', actorLabel(o.actor));
          let running = daemonRunning(config.agent.dataDir);
          const deadline = Date.now() + waitMs;
          let shown = '';
          while (running && (current.status === 'requested' || current.status === 'running') && Date.now() < deadline) {
            await new Promise((r) => setTimeout(r, 250));
            current = runs.get(current.id)!;
            running = daemonRunning(config.agent.dataDir);
            const now = line(current);
            if (!o.json && now !== shown) process.stderr.write(`${now}\n`);
            shown = now;
          }
          return { run: current, targets: runs.targets(current.id), daemonRunning: running };
        });
        if (finished.run.status === 'failed') throw new RefusedError(`run ${finished.run.id} failed: ${finished.run.error ?? 'see the agent log'}`);
        if (finished.daemonRunning && waitMs > 0 && finished.run.status !== 'done') {
          throw new RefusedError(
            `run ${finished.run.id} is still ${finished.run.status} after --wait ${o.wait} s; follow it with edge-agent opcua run ${finished.run.id}`,
          );
        }
        return finished;
      },
      view,
    );
  });

  common(
    opcua
      .command('export-bundle')
      .description('for a server without push management: write a key, a certificate from the gateway CA and its chain, to install by hand')
      .requiredOption('--id <device>', 'the server, as devices list shows it (opcua:...)')
      .requiredOption('--out <dir>', 'directory for key.pem (0600), cert.pem, cert.der and chain.pem')
      .option('--actor <name>', 'who exports: a name recorded beside your login (as root through sudo, "root (sudo: <login>)"), which alone is the default'),
  ).action(async (o: Common & { id: string; out: string; actor?: string }) => {
    result.code = await run(
      o,
      (config) => exportBundle(config, o.id, o.out, actorLabel(o.actor)),
      (r: { device: string; serial: string; files: Record<string, string> }) =>
        `${r.device}: certificate ${r.serial} written to ${Object.values(r.files).join(', ')}\n` +
        "install key.pem and cert.pem (or cert.der) as the server's application instance certificate, and chain.pem as its issuers\n",
    );
  });

  common(
    opcua
      .command('client-bundle')
      .description("what a server needs to trust the agent: the agent's OPC UA client certificate, the gateway CA certificates and their CRLs, in PKI folders")
      .requiredOption('--out <dir>', 'directory for trusted/certs, issuers/certs and issuers/crl (DER files)'),
  ).action(async (o: Common & { out: string }) => {
    result.code = await run(
      o,
      (config) => clientBundle(config, o.out),
      (r: { applicationUri: string; thumbprint: string; files: string[] }) =>
        `the agent's OPC UA client ${r.applicationUri} (thumbprint ${r.thumbprint}):\n${r.files.map((f) => `  ${f}`).join('\n')}\n` +
        "copy trusted/ and issuers/ into the server's PKI (or trust the certificate and add the CAs and CRLs in its configuration tool)\n",
    );
  });

  common(
    opcua
      .command('push-status')
      .description('push provisioning of approved servers: status, step reached, retries, CRL delivery; with --id, the steps of one server')
      .option('--id <device>', 'one server (opcua:...), with its step log'),
  ).action(async (o: Common & { id?: string }) => {
    result.code = await run(
      o,
      (config) =>
        readStore(config, (_store, { pushes }) => {
          if (o.id === undefined) return { jobs: pushes.list() };
          const id = o.id.startsWith('opcua:') ? o.id : `opcua:${o.id}`;
          const job = pushes.get(id);
          if (!job) throw new UsageError(`no push for ${id}: it has not been approved (edge-agent devices approve ${id})`);
          return { jobs: [job], steps: pushes.steps(id) };
        }),
      pushView,
    );
  });

  common(opcua.command('runs').description('the latest discovery runs').option('--limit <n>', 'how many', '20')).action(
    async (o: Common & { limit: string }) => {
      result.code = await run(
        o,
        (config) => {
          const limit = Number(o.limit);
          if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new UsageError('--limit takes a whole number from 1 to 1000');
          return withRuns(config, (runs) => runs.list(limit).filter((r) => r.protocol === 'opcua'), 'read');
        },
        (rows: DiscoveryRun[]) => (rows.length === 0 ? 'no discovery runs\n' : `${rows.map(line).join('\n')}\n`),
      );
    },
  );

  common(opcua.command('run').description('one discovery run with every target and its outcome').argument('<id>', 'run id (from opcua runs)')).action(
    async (id: string, o: Common) => {
      result.code = await run(
        o,
        (config) =>
          withRuns(
            config,
            (runs) => {
              const found = /^\d+$/.test(id) ? runs.get(Number(id)) : undefined;
              if (!found) throw new UsageError(`no discovery run ${id}`);
              return { run: found, targets: runs.targets(found.id) };
            },
            'read',
          ),
        view,
      );
    },
  );
}
