/**
 * The demo plant's OPC UA servers, in a process of their own that run.ts
 * starts: real node-opcua servers on 127.0.0.1 (ports the kernel picks)
 * offering SignAndEncrypt only, with Part 12 push certificate management and
 * a SecurityAdmin user, as a commissioned plant server has.
 *
 *   node dist/scripts/demo/opcuaPlant.js --dir DIR --password-file FILE
 *
 * Prints one JSON line {"servers": [{name, applicationUri, endpointUrl}]}
 * once every server listens. With an IPC channel (run.ts opens one), the
 * message {type: "commission", bundle: DIR} makes every server trust what
 * `edge-agent opcua client-bundle --out DIR` wrote (the one-time step of a
 * real commissioning), answered by {type: "commissioned"} or {type:
 * "error", message}. Stops on SIGTERM, SIGINT, or when the IPC channel
 * closes (the demo runner is gone), removing the servers' PKI directories;
 * stopped while the servers still start, it exits at once, leaving them in
 * --dir.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startOpcuaServer, type OpcuaServerHandle } from '../lib/opcuaServer.js';
import { DEMO_SERVERS, SECURITY_ADMIN } from './plant.js';

export type PlantMessage = { type: 'commission'; bundle: string };
export type PlantAnswer = { type: 'commissioned' } | { type: 'error'; message: string };
export interface PlantReady {
  servers: { name: string; applicationUri: string; endpointUrl: string }[];
}

const { values: o } = parseArgs({ options: { dir: { type: 'string' }, 'password-file': { type: 'string' } } });
if (!o.dir || !o['password-file']) {
  process.stderr.write('usage: opcuaPlant.js --dir DIR --password-file FILE\n');
  process.exit(64);
}
const dir = o.dir;
const password = readFileSync(o['password-file'], 'utf8').split(/\r?\n/)[0] ?? '';

/** Filled once every server listens. */
const servers: OpcuaServerHandle[] = [];
let stopping: Promise<void> | undefined;
function stop(code: number): Promise<void> {
  stopping ??= (async () => {
    // Still starting (none listed): node-opcua cannot be interrupted, and all it made is under --dir, which the runner removes.
    await Promise.allSettled(servers.map((s) => s.stop()));
    process.exit(code);
  })();
  return stopping;
}
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => void stop(0));
// The runner is gone (even killed): no server outlives it.
process.once('disconnect', () => void stop(0));

/** The files of one folder of a client bundle (DER). */
const files = (bundle: string, sub: string) => readdirSync(join(bundle, sub)).map((f) => readFileSync(join(bundle, sub, f)));

process.on('message', (m: PlantMessage) => {
  if (m.type !== 'commission') return;
  const client = { certificate: files(m.bundle, 'trusted/certs')[0]!, issuers: files(m.bundle, 'issuers/certs'), crls: files(m.bundle, 'issuers/crl') };
  Promise.all(servers.map((s) => s.trustCaIssuedClient(client))).then(
    () => process.send?.({ type: 'commissioned' } satisfies PlantAnswer),
    (err: Error) => process.send?.({ type: 'error', message: err.message } satisfies PlantAnswer),
  );
});

const made = await Promise.all(
  DEMO_SERVERS.map((s) =>
    startOpcuaServer({
      host: '127.0.0.1',
      securityModes: 'secure',
      // A client certificate is trusted by commissioning, not on sight.
      acceptUnknownClientCertificates: false,
      applicationUri: s.applicationUri,
      applicationName: s.applicationName,
      buildInfo: { manufacturerName: s.manufacturer, productName: s.product, productUri: `urn:demo-products:${s.name}` },
      pushManagement: { securityAdmin: { username: SECURITY_ADMIN, password } },
      parentDir: dir,
    }),
  ),
).catch((err: Error) => {
  process.stderr.write(`opcuaPlant: a server did not start: ${err.stack ?? String(err)}\n`);
  process.exit(1);
});
servers.push(...made);
const message: PlantReady = {
  servers: made.map((s, i) => ({ name: DEMO_SERVERS[i]!.name, applicationUri: s.applicationUri, endpointUrl: s.endpointUrl })),
};
process.stdout.write(`${JSON.stringify(message)}\n`);
