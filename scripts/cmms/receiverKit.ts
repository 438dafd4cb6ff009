/**
 * What the benchmark and the demo plant need to run the reference receiver
 * (referenceServer.ts) beside the agent: a TLS certificate from a CA of its
 * own, and the receiver as a child process whose port is known once it
 * listens.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { CertificateAuthority } from '../../certs/authority.js';
import { initCa } from '../../certs/hierarchy.js';
import { IssuingCa } from '../../certs/issuer.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import { CertificateRepository } from '../../agent/store/certificateRepository.js';
import { Store } from '../../agent/store/database.js';

/** The compiled receiver, next to this file in dist/. */
const RECEIVER = fileURLToPath(new URL('./referenceServer.js', import.meta.url));

export interface ReceiverTls {
  /** The receiver's certificate (PEM) and its issuing CA. */
  cert: string;
  /** Its private key (PKCS#8 PEM). */
  key: string;
  /** The root the agent's sync.caFile names: the receiver's certificate chains to it. */
  ca: string;
}

/**
 * Makes, in `dir`, a CA of the receiver's own (the gateway CA code, apart from
 * any agent's) and a server certificate for 127.0.0.1 from it.
 */
export async function receiverTls(dir: string): Promise<ReceiverTls> {
  const caDir = join(dir, 'cmms-ca');
  mkdirSync(dir, { recursive: true });
  initCa({
    dir: caDir,
    passphrase: undefined,
    organization: 'CMMS',
    gatewayId: 'cmms',
    rootKeyType: 'ec-p256',
    issuers: { ec: 'ec-p256' },
    rootValidityDays: 30,
    issuingValidityDays: 30,
  });
  const { store } = Store.open(
    { path: join(dir, 'cmms-ca.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
    pino({ level: 'silent' }),
  );
  try {
    const authority = new CertificateAuthority({
      issuers: { ec: IssuingCa.load(caDir, 'ec', undefined)! },
      store: new CertificateRepository(store),
      organization: 'CMMS',
      validityDays: { 'mqtt-device': 30, 'opcua-application': 30, 'broker-server': 30, 'agent-client': 30 },
      allowKeyReuse: false,
    });
    const key = SoftwareKey.generate('ec-p256');
    const issued = await authority.issue({
      profile: 'broker-server',
      identity: 'cmms',
      ipAddresses: ['127.0.0.1'],
      csr: buildCsr(key, encodeName({ commonName: 'cmms' })),
    });
    const tls = { cert: join(dir, 'receiver.crt'), key: join(dir, 'receiver.key'), ca: join(dir, 'ca.pem') };
    writeFileSync(tls.cert, issued.record.pem + issued.chain.slice(0, -1).join(''));
    writeFileSync(tls.key, key.exportable().export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
    writeFileSync(tls.ca, issued.chain.at(-1)!);
    return tls;
  } finally {
    store.close();
  }
}

export interface ReceiverOptions {
  /** Its SQLite file. */
  db: string;
  tls: Pick<ReceiverTls, 'cert' | 'key'>;
  /** File whose first line is the bearer token it requires. */
  tokenFile: string;
  /** How the child is spawned (stdout stays a pipe: the port is read from it). */
  spawn?: Pick<SpawnOptions, 'detached' | 'env'> & { stderr?: 'inherit' | 'ignore' | 'pipe' };
  /** Called with the child as soon as it is spawned, before it listens (to track it from the start). */
  onSpawn?: (child: ChildProcess) => void;
}

/** Starts the reference receiver; resolves with its port once it listens (rejects if it exits first). */
export async function startReceiver(o: ReceiverOptions): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, [RECEIVER, '--db', o.db, '--cert', o.tls.cert, '--key', o.tls.key, '--token-file', o.tokenFile], {
    stdio: ['ignore', 'pipe', o.spawn?.stderr ?? 'inherit'],
    ...(o.spawn?.detached === undefined ? {} : { detached: o.spawn.detached }),
    ...(o.spawn?.env === undefined ? {} : { env: o.spawn.env }),
  });
  o.onSpawn?.(child);
  const port = await new Promise<number>((ok, fail) => {
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{"port"'));
      if (line) {
        child.stdout!.off('data', onData);
        child.off('exit', onExit);
        // Drained from now on: a full pipe must never stall the receiver.
        child.stdout!.resume();
        ok((JSON.parse(line) as { port: number }).port);
      }
    };
    const onExit = (code: number | null) => fail(new Error(`the CMMS receiver exited (${code}) before it listened`));
    child.stdout!.on('data', onData);
    child.once('exit', onExit);
    child.once('error', fail);
  });
  return { port, child };
}
