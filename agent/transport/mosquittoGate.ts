import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Counter } from 'prom-client';
import { writeFileAtomic } from '../../certs/keys/fileKey.js';
import { devicesAcl } from '../broker/mosquittoAcl.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { AccessGate } from '../onboarding/mqttEnrollment.js';

export interface MosquittoGateDeps {
  log: Logger;
  metrics: Metrics;
  options: () => { dir: string; pidFile: string; reloadCommand: string; agentId: string; topicPrefix: string; crlFile: string };
  /** Identities cut off now (revoked or decommissioned devices), from the inventory. */
  cutOffIdentities: () => string[];
}

/**
 * Cuts revoked devices off an external Mosquitto without restarting it:
 * rewrites acl-devices with a deny entry per cut-off identity, copies the
 * current CRL next to it (read at Mosquitto's next start), and has Mosquitto
 * reread its ACLs (SIGHUP to mqtt.mosquittoPidFile, or
 * mqtt.mosquittoReloadCommand, or, with neither, a systemd path unit that
 * watches the file). Rewrites are serialised; each one writes the
 * whole current set, so a lost or repeated one is repaired by the next.
 */
export class MosquittoGate implements AccessGate {
  private chain: Promise<void> = Promise.resolve();
  private written = new Set<string>();
  private readonly reloads: Counter<'result'>;

  constructor(private readonly deps: MosquittoGateDeps) {
    this.reloads = new Counter({ name: 'edge_agent_mosquitto_acl_reloads_total', help: 'ACL rewrites for Mosquitto, by result: ok (reload signalled), file_only (left to a watcher), failed, not_configured', labelNames: ['result'], registers: [deps.metrics.registry] });
  }

  /** Writes the current set at start, so the files match the inventory after any restart. */
  sync(): Promise<void> {
    return this.enqueue('start');
  }

  cutOff(identity: string): Promise<void> {
    return this.enqueue(`cut off ${identity}`);
  }

  async restore(identity: string): Promise<void> {
    // A newly issued certificate needs no reload (patterns cover it) unless the identity was denied before.
    if (this.written.has(identity)) await this.enqueue(`restore ${identity}`);
  }

  private enqueue(why: string): Promise<void> {
    const run = this.chain.then(() => this.rewrite(why));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async rewrite(why: string): Promise<void> {
    const o = this.deps.options();
    if (o.dir === '') {
      this.reloads.inc({ result: 'not_configured' });
      this.deps.log.warn({ why }, 'mqtt.mosquittoDir is not set: a revoked device keeps its access until Mosquitto restarts with the new CRL');
      return;
    }
    const identities = this.deps.cutOffIdentities();
    writeFileAtomic(join(o.dir, 'acl-devices'), devicesAcl(o.agentId, o.topicPrefix, identities), 0o644);
    if (existsSync(o.crlFile) && o.crlFile !== join(o.dir, 'crl.pem')) writeFileAtomic(join(o.dir, 'crl.pem'), readFileSync(o.crlFile), 0o644);
    this.written = new Set(identities);
    if (o.pidFile === '' && o.reloadCommand === '') {
      // A systemd path unit (config/edge-agent-mosquitto-reload.path) watches the file and reloads Mosquitto.
      this.reloads.inc({ result: 'file_only' });
      this.deps.log.info({ why, cutOff: identities.length }, 'Mosquitto ACL rewritten; its reload is left to a watcher of the file');
      return;
    }
    try {
      await this.signal(o);
      this.reloads.inc({ result: 'ok' });
      this.deps.log.info({ why, cutOff: identities.length }, 'Mosquitto ACL rewritten and reloaded');
    } catch (err) {
      this.reloads.inc({ result: 'failed' });
      this.deps.log.error({ err, why }, 'Mosquitto could not be told to reload its ACL; the device keeps its access until it does');
      throw err;
    }
  }

  private async signal(o: { pidFile: string; reloadCommand: string }): Promise<void> {
    if (o.reloadCommand !== '') {
      await new Promise<void>((resolve, reject) =>
        execFile('/bin/sh', ['-c', o.reloadCommand], { timeout: 10_000 }, (err, _stdout, stderr) =>
          err ? reject(new Error(`${o.reloadCommand} failed: ${stderr.trim() || err.message}`)) : resolve(),
        ),
      );
      return;
    }
    const pid = Number(readFileSync(o.pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1) throw new Error(`${o.pidFile} does not hold a process id`);
    process.kill(pid, 'SIGHUP');
  }
}
