import { execFile } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Counter } from 'prom-client';
import { writeFileAtomic } from '../../certs/keys/fileKey.js';
import { devicesAcl } from '../broker/mosquittoAcl.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { AccessGate } from './types.js';
import { PeerError } from '../errors.js';

export interface MosquittoGateDeps {
  log: Logger;
  metrics: Metrics;
  options: () => { dir: string; pidFile: string; reloadCommand: string; agentId: string; topicPrefix: string; crlFile: string; configTopicRoot?: string };
  /** Identities cut off now (revoked or decommissioned devices), from the inventory. */
  cutOffIdentities: () => string[];
  /**
   * Connects to the broker with this client id and leaves at once: Mosquitto
   * closes any other connection using it (whatever its listener or user) and,
   * with a clean start, drops its session.
   */
  takeOver: (clientId: string) => Promise<void>;
}

/** What a rewrite did: the identities it cut off that were not cut off before, and whether it signalled Mosquitto itself. */
interface Rewrite {
  fresh: string[];
  signalled: boolean;
}

/** How long a path unit is given to reload Mosquitto before a cut-off device's client id is taken over. */
const WATCHER_GRACE_MS = 2_000;

/**
 * Cuts revoked devices off an external Mosquitto without restarting it.
 * Each rewrite copies the current CRL next to the configuration, then
 * rewrites acl-devices with a `topic deny #` per cut-off identity, then has
 * Mosquitto reload (SIGHUP to mqtt.mosquittoPidFile, or
 * mqtt.mosquittoReloadCommand, or, with neither, a systemd path unit that
 * watches the files). Mosquitto 2.0 rereads its CRL and its ACL files on
 * SIGHUP: from then on a revoked certificate fails the TLS handshake, and
 * open connections of a cut-off identity can neither publish nor receive.
 * Such a connection stays open; the gate then takes the device id over as
 * client id, which ends the connection of a device that uses its id as
 * client id (one with another client id cannot be found: it stays connected,
 * and can do nothing).
 *
 * A CRL changed by anything else (a revocation through `ca revoke` or the
 * API, the CA's periodic reissue before nextUpdate) is noticed by
 * `refresh()` and handed over the same way, so Mosquitto never runs on an
 * expired CRL. Rewrites are serialised; each one writes the whole current
 * set, so a lost or repeated one is repaired by the next.
 */
export class MosquittoGate implements AccessGate {
  private chain: Promise<Rewrite> = Promise.resolve({ fresh: [], signalled: false });
  private written = new Set<string>();
  private crlStamp: string | undefined;
  private refreshing = false;
  private readonly reloads: Counter<'result'>;
  private readonly takeovers: Counter<'result'>;

  constructor(private readonly deps: MosquittoGateDeps) {
    this.reloads = new Counter({
      name: 'edge_agent_mosquitto_acl_reloads_total',
      help: 'CRL and ACL rewrites for Mosquitto, by result: ok (reload signalled), file_only (left to a watcher), failed, not_configured',
      labelNames: ['result'],
      registers: [deps.metrics.registry],
    });
    this.takeovers = new Counter({
      name: 'edge_agent_mosquitto_takeovers_total',
      help: "Client-id takeovers that end a cut-off device's connection on Mosquitto, by result: ok, failed",
      labelNames: ['result'],
      registers: [deps.metrics.registry],
    });
  }

  /**
   * Writes the current set at start, so the files match the inventory after
   * any restart, and takes over the client ids of devices cut off while the
   * agent was down (`ca revoke` beside it): those the file on disk did not
   * deny yet.
   */
  async sync(): Promise<void> {
    await this.takeOverAll(await this.enqueue('start', true));
  }

  async cutOff(identity: string): Promise<void> {
    await this.takeOverAll(await this.enqueue(`cut off ${identity}`));
  }

  async restore(identity: string): Promise<void> {
    // A newly issued certificate needs no reload (patterns cover it) unless the identity was denied before.
    if (this.written.has(identity)) await this.enqueue(`restore ${identity}`);
  }

  /**
   * Hands a CRL that changed since the last rewrite over to Mosquitto (cheap
   * when nothing changed: one stat). Called on a timer; never throws.
   */
  async refresh(): Promise<void> {
    const o = this.deps.options();
    if (o.dir === '' || this.refreshing || this.stamp(o.crlFile) === this.crlStamp) return;
    this.refreshing = true;
    try {
      await this.takeOverAll(await this.enqueue('CRL changed'));
    } catch {
      // Logged by rewrite(); the next change tries again.
    } finally {
      this.refreshing = false;
    }
  }

  /** Runs a rewrite after the ones queued. */
  private enqueue(why: string, initial = false): Promise<Rewrite> {
    const run = this.chain.then(() => this.rewrite(why, initial));
    this.chain = run.catch(() => ({ fresh: [], signalled: false }));
    return run;
  }

  private stamp(file: string): string {
    try {
      const s = statSync(file);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return 'absent';
    }
  }

  private async rewrite(why: string, initial: boolean): Promise<Rewrite> {
    const o = this.deps.options();
    if (o.dir === '') {
      this.reloads.inc({ result: 'not_configured' });
      this.deps.log.warn({ why }, 'mqtt.mosquittoDir is not set: a revoked device keeps its access until Mosquitto restarts with the new CRL');
      return { fresh: [], signalled: false };
    }
    const identities = this.deps.cutOffIdentities();
    // At start, what Mosquitto was last told is what the devices file on disk denies.
    const before = initial ? deniedIn(join(o.dir, 'acl-devices')) : this.written;
    const fresh = identities.filter((i) => !before.has(i));
    // What Mosquitto is known to hold: moved forward only once it has been told (or a watcher is left to tell it), so a
    // failed reload is repeated by the next rewrite or refresh, and its fresh identities are still taken over then.
    const crlStamp = this.stamp(o.crlFile);
    // The CRL before the ACL: a path unit that watches acl-devices reloads once both are in place.
    if (existsSync(o.crlFile) && o.crlFile !== join(o.dir, 'crl.pem')) writeFileAtomic(join(o.dir, 'crl.pem'), readFileSync(o.crlFile), 0o644);
    writeFileAtomic(join(o.dir, 'acl-devices'), devicesAcl(o.agentId, o.topicPrefix, identities, o.configTopicRoot), 0o644);
    const held = () => {
      this.crlStamp = crlStamp;
      this.written = new Set(identities);
    };
    if (o.pidFile === '' && o.reloadCommand === '') {
      held();
      // A systemd path unit (config/edge-agent-mosquitto-reload.path) watches the files and reloads Mosquitto.
      this.reloads.inc({ result: 'file_only' });
      this.deps.log.info({ why, cutOff: identities.length }, 'Mosquitto ACL rewritten; its reload is left to a watcher of the file');
      return { fresh, signalled: false };
    }
    try {
      await this.signal(o);
      held();
      this.reloads.inc({ result: 'ok' });
      this.deps.log.info({ why, cutOff: identities.length }, 'Mosquitto ACL rewritten and reloaded');
    } catch (err) {
      this.reloads.inc({ result: 'failed' });
      this.deps.log.error({ err, why }, 'Mosquitto could not be told to reload its ACL; the device keeps its access until it does');
      throw err;
    }
    return { fresh, signalled: true };
  }

  /**
   * Ends the open connections of cut-off devices that use their id as client
   * id. After the reload: a device that reconnects at once then meets the
   * new CRL. Failures are logged, never thrown: the CRL and the ACL already
   * keep the device out.
   */
  private async takeOverAll({ fresh, signalled }: Rewrite): Promise<void> {
    if (fresh.length === 0) return;
    // Taken over before the reload, a device could reconnect under the old CRL (and stay connected, refused everything).
    if (!signalled) await new Promise((r) => setTimeout(r, WATCHER_GRACE_MS));
    for (const identity of fresh) {
      try {
        await this.deps.takeOver(identity);
        this.takeovers.inc({ result: 'ok' });
        this.deps.log.info({ device: identity }, 'client id of a cut-off device taken over on Mosquitto');
      } catch (err) {
        this.takeovers.inc({ result: 'failed' });
        this.deps.log.warn(
          { err: { message: (err as Error).message }, device: identity },
          'client id of a cut-off device could not be taken over; an open connection under it stays, refused everything by the ACL',
        );
      }
    }
  }

  private async signal(o: { pidFile: string; reloadCommand: string }): Promise<void> {
    if (o.reloadCommand !== '') {
      await new Promise<void>((resolve, reject) =>
        execFile('/bin/sh', ['-c', o.reloadCommand], { timeout: 10_000 }, (err, _stdout, stderr) =>
          err ? reject(new PeerError('MOSQUITTO_RELOAD_FAILED', `${o.reloadCommand} failed: ${stderr.trim() || err.message}`)) : resolve(),
        ),
      );
      return;
    }
    const pid = Number(readFileSync(o.pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1) throw new PeerError('MOSQUITTO_RELOAD_FAILED', `${o.pidFile} does not hold a process id`);
    process.kill(pid, 'SIGHUP');
  }
}

/** The identities a devices file written by devicesAcl() denies (`user X` then `topic deny #`); none when there is no file. */
function deniedIn(file: string): Set<string> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return new Set();
  }
  const lines = text.split('\n');
  const denied = new Set<string>();
  for (let i = 0; i + 1 < lines.length; i++) {
    const user = /^user (\S+)$/.exec(lines[i]!);
    if (user && lines[i + 1] === 'topic deny #') denied.add(user[1]!);
  }
  return denied;
}
