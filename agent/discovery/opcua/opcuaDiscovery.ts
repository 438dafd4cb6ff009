import { createHash } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIPv4, Socket } from 'node:net';
import type { Config } from '../../config/schema.js';
import type { EventBus } from '../../events.js';
import type { Nameplate } from '../../inventory/device.js';
import type { Logger } from '../../log.js';
import type { Store } from '../../store/database.js';
import type { DeviceRepository } from '../../store/deviceRepository.js';
import type { DiscoveryRun, DiscoveryRunRepository, TargetSource } from '../../store/discoveryRunRepository.js';
import { announcementUrls, browseOpcua, type OpcuaAnnouncement } from '../../transport/mdnsBrowser.js';
import { Deadline } from '../../transport/deadline.js';
import type { OpcuaProbe, OpcuaServerFacts } from '../../transport/opcuaProbe.js';
import { addresses, contains, parseRange, targetRefusal, type Range } from '../../transport/ranges.js';
import { TimeoutError } from '../../errors.js';

export interface OpcuaDiscoveryDeps {
  log: Logger;
  config: () => Config['opcua'];
  probe: OpcuaProbe;
  runs: DiscoveryRunRepository;
  devices: DeviceRepository;
  store: Store;
  bus: EventBus;
  /** mDNS browsing (default: browseOpcua on the configured interface). */
  browse?: (mdns: Config['opcua']['mdns'], log: Logger) => Promise<OpcuaAnnouncement[]>;
}

/**
 * The inventory name of a server: its applicationUri made into a device id
 * (characters outside A-Z a-z 0-9 . _ - become '.'), shortened, with 8 hex
 * of its SHA-256 so that two URIs that clean up alike stay apart.
 */
export function serverName(applicationUri: string): string {
  const slug =
    applicationUri
      .replace(/[^A-Za-z0-9._-]+/g, '.')
      .replace(/^\.+|\.+$/g, '')
      .slice(0, 55) || 'server';
  return `${slug}-${createHash('sha256').update(applicationUri).digest('hex').slice(0, 8)}`;
}

function hostOf(url: string): { host: string; port: number } | undefined {
  try {
    const u = new URL(url);
    return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 4840) };
  } catch {
    return undefined;
  }
}

/** Whether something listens on host:port (a refused or silent port costs at most what is left of `deadline`). */
function tcpOpen(host: string, port: number, deadline: Deadline): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (open: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(open);
    };
    const timer = setTimeout(() => done(false), deadline.remaining());
    socket.once('error', () => done(false));
    socket.connect(port, host, () => done(true));
  });
}

/** Runs `work` over `items` (a list or a generator, taken lazily), `concurrency` at a time, until they run out or `signal` aborts. */
async function pool<T>(items: Iterable<T>, concurrency: number, signal: AbortSignal, work: (item: T) => Promise<void>): Promise<void> {
  const iterator = items[Symbol.iterator]();
  const worker = async () => {
    for (let next = iterator.next(); !next.done && !signal.aborted; next = iterator.next()) await work(next.value);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/**
 * The configuration a run works with: a technician's targets replace the
 * configured endpoints and ranges (URLs are probed as endpoints, CIDRs
 * scanned on the configured ports), without discovery servers or mDNS.
 * Each target is checked again against the configuration as it is now (a
 * run may wait while an administrator narrows the ranges); one no longer
 * allowed is left out and returned in `refused`.
 */
export function forRequest(c: Config['opcua'], run: Pick<DiscoveryRun, 'request'>): { config: Config['opcua']; refused: string[] } {
  const targets = run.request?.targets;
  if (!targets || targets.length === 0) return { config: c, refused: [] };
  const allowed = c.scan.ranges.map(parseRange);
  const ok = targets.filter((t) => targetRefusal(t, allowed, c.endpoints, c.scan.ports) === undefined);
  return {
    config: {
      ...c,
      endpoints: ok.filter((t) => t.startsWith('opc.tcp://')),
      discoveryServers: [],
      mdns: { ...c.mdns, enabled: false },
      scan: { ...c.scan, ranges: ok.filter((t) => !t.startsWith('opc.tcp://')) },
    },
    refused: targets.filter((t) => !ok.includes(t)),
  };
}

/** At most this many URLs are taken from one LDS answer. */
const MAX_LDS_URLS = 1_000;

/** Text from the network, fit to be stored and printed: no control characters, at most 256 characters. */
const printable = (text: string): string => text.replace(/[\u0000-\u001f\u007f]/g, '?').slice(0, 256);

/**
 * One OPC UA discovery run: the configured endpoints, what the Local
 * Discovery Servers list, and a scan of the configured ranges; then each
 * server's endpoints and nameplate, recorded in the inventory as
 * `discovered` (or updated). Only addresses inside opcua.scan.ranges are
 * contacted on an LDS's word; configured endpoints and LDSs are contacted as
 * configured. Every target's outcome is recorded as it comes.
 */
export class OpcuaDiscovery {
  constructor(private readonly deps: OpcuaDiscoveryDeps) {}

  /**
   * Runs one discovery. When `signal` aborts (the daemon stops), no new
   * target is started and the run goes back to `requested`, to be run again
   * at the next start.
   */
  async run(run: DiscoveryRun, stopping: AbortSignal = new AbortController().signal): Promise<void> {
    const { runs, log } = this.deps;
    const { config: c, refused } = forRequest(this.deps.config(), run);
    const counts = { total: 0, done: 0, found: 0, errors: 0 };
    const progress = (phase: 'listing' | 'scanning' | 'probing' | 'done' | 'failed' | 'cancelled', scanned?: { done: number; total: number }) =>
      this.deps.bus.emit('discovery.progress', { runId: run.id, protocol: 'opcua', phase, ...counts, ...(scanned ? { scanned } : {}) });
    const cancelled = () => runs.cancelledBy(run.id);
    if (cancelled()) {
      runs.finish(run.id, 'failed', `cancelled by ${cancelled()}`);
      return progress('cancelled');
    }
    // A technician's cancel (written to the database, by the API or the CLI) stops the run like a daemon stop does.
    const cancel = new AbortController();
    const watch = setInterval(() => cancelled() && cancel.abort(), 200);
    const signal = AbortSignal.any([stopping, cancel.signal]);
    runs.start(run.id, 0);
    log.info({ run: run.id, trigger: run.trigger, actor: run.actor, targets: run.request?.targets }, 'OPC UA discovery started');
    for (const target of refused) {
      counts.total += 1;
      runs.addTargets(run.id, 1);
      this.record(run, counts, {
        target: target.slice(0, 200),
        source: 'endpoint',
        status: 'skipped',
        detail: 'no longer inside opcua.scan.ranges and scan.ports: not contacted',
      });
    }
    try {
      await this.steps(run, c, counts, progress, signal);
    } finally {
      clearInterval(watch);
    }
    if (cancel.signal.aborted && !stopping.aborted) {
      runs.finish(run.id, 'failed', `cancelled by ${cancelled()}`);
      progress('cancelled');
      log.info({ run: run.id, by: cancelled(), ...counts }, 'OPC UA discovery cancelled');
    }
  }

  private async steps(
    run: DiscoveryRun,
    c: Config['opcua'],
    counts: { total: number; done: number; found: number; errors: number },
    progress: (phase: 'listing' | 'scanning' | 'probing' | 'done' | 'failed', scanned?: { done: number; total: number }) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const { runs, log } = this.deps;
    const seen = new Map<string, { thumbprint: string | undefined; url: string; deviceId: string }>();
    const found = new Set<string>();
    let scannedHosts = new Set<string>();
    try {
      const ranges = c.scan.ranges.map(parseRange);
      const targets = new Map<string, TargetSource>();
      // What the TCP connect of a scanned address took of its opcua.timeoutMs: the probe gets the rest.
      const spent = new Map<string, number>();
      const add = (url: string, source: TargetSource) => {
        if (targets.has(url)) return;
        targets.set(url, source);
        counts.total += 1;
        runs.addTargets(run.id, 1);
      };
      for (const url of c.endpoints) add(url, 'endpoint');
      progress('listing');
      const recorded = new Set<string>();
      await pool(c.discoveryServers, 4, signal, async (lds) => {
        try {
          const listed = await this.deps.probe.findServers(lds, c.timeoutMs);
          const urls = listed
            .filter((s) => s.applicationType !== 'DiscoveryServer')
            .flatMap((s) => s.discoveryUrls)
            .slice(0, MAX_LDS_URLS);
          for (const raw of urls) {
            const url = printable(raw);
            if (!url.startsWith('opc.tcp://')) continue;
            const allowed = await this.allowed(url, ranges, c.timeoutMs);
            if (allowed === undefined) {
              if (recorded.has(url) || targets.has(url)) continue;
              recorded.add(url);
              counts.total += 1;
              runs.addTargets(run.id, 1);
              this.record(run, counts, { target: url, source: 'lds', status: 'skipped', detail: `listed by ${lds}, outside opcua.scan.ranges: not contacted` });
            } else add(allowed, 'lds');
          }
        } catch (err) {
          counts.total += 1;
          runs.addTargets(run.id, 1);
          this.record(run, counts, { target: `lds ${lds}`, source: 'lds', status: 'error', detail: `discovery server: ${(err as Error).message}` });
        }
      });
      if (c.mdns.enabled) {
        try {
          const browse = this.deps.browse ?? ((m, l) => browseOpcua({ iface: m.interface, listenMs: m.listenMs, log: l }));
          for (const a of await browse(c.mdns, log)) {
            // A discovery server announces itself too: the servers it knows announce themselves (or it does for them).
            if (a.caps.includes('LDS')) continue;
            for (const url of announcementUrls(a)) {
              if (targets.has(url) || recorded.has(url)) continue;
              if (contains(ranges, new URL(url).hostname)) add(url, 'mdns');
              else {
                recorded.add(url);
                counts.total += 1;
                runs.addTargets(run.id, 1);
                this.record(run, counts, {
                  target: url,
                  source: 'mdns',
                  status: 'skipped',
                  detail: `announced over mDNS as ${a.instance}, outside opcua.scan.ranges: not contacted`,
                });
              }
            }
          }
        } catch (err) {
          counts.total += 1;
          runs.addTargets(run.id, 1);
          this.record(run, counts, { target: 'mdns', source: 'mdns', status: 'error', detail: `mDNS browse: ${(err as Error).message}` });
        }
      }
      if (ranges.length > 0) {
        const hosts = addresses(ranges, c.scan.maxAddresses);
        scannedHosts = new Set(hosts);
        const scanned = { done: 0, total: hosts.length * c.scan.ports.length };
        const candidates = function* () {
          for (const host of hosts) for (const port of c.scan.ports) yield { host, port };
        };
        progress('scanning', scanned);
        await pool(candidates(), c.scan.concurrency, signal, async ({ host, port }) => {
          const url = `opc.tcp://${host}:${port}`;
          const deadline = new Deadline(c.timeoutMs);
          if (!targets.has(url) && (await tcpOpen(host, port, deadline))) {
            add(url, 'scan');
            spent.set(url, c.timeoutMs - deadline.remaining());
          }
          scanned.done += 1;
          if (scanned.done % 256 === 0 || scanned.done === scanned.total) progress('scanning', scanned);
        });
      }
      progress('probing');
      await pool([...targets], c.scan.concurrency, signal, async ([url, source]) => {
        try {
          const facts = await this.deps.probe.probe(url, new Deadline(c.timeoutMs, c.timeoutMs - (spent.get(url) ?? 0)));
          const same = seen.get(facts.applicationUri);
          if (same && same.thumbprint !== facts.certificateThumbprint) {
            // Two servers claim one applicationUri (a cloned project, or a spoof): neither overwrites the other.
            this.record(run, counts, {
              target: url,
              source,
              status: 'error',
              detail: `applicationUri ${facts.applicationUri} is also served by ${same.url} with another certificate: not recorded, check both servers`,
            });
          } else if (same) {
            found.add(same.deviceId);
            this.record(run, counts, { target: url, source, status: 'found', deviceId: same.deviceId, detail: `the same server as ${same.url}` });
          } else {
            const deviceId = this.recordServer(run, facts);
            found.add(deviceId);
            seen.set(facts.applicationUri, { thumbprint: facts.certificateThumbprint, url, deviceId });
            this.record(run, counts, { target: url, source, status: 'found', deviceId, ...(facts.nameplateError ? { detail: facts.nameplateError } : {}) });
          }
        } catch (err) {
          const message = (err as Error).message || String(err);
          this.record(run, counts, {
            target: url,
            source,
            status: source === 'scan' ? 'nothing' : 'error',
            detail: source === 'scan' ? `not an OPC UA server: ${message}` : message,
          });
        }
        progress('probing');
      });
      if (signal.aborted) {
        if (runs.cancelledBy(run.id)) return;
        runs.requeue(run.id);
        log.info({ run: run.id, ...counts }, 'OPC UA discovery interrupted; it runs again at the next start');
        return;
      }
      // Where this run looked (every target, every address and port scanned), a server it did not find is offline.
      this.markMissing(run, found, (url) => {
        const at = hostOf(url);
        return targets.has(url) || (at !== undefined && scannedHosts.has(at.host) && c.scan.ports.includes(at.port));
      });
      runs.finish(run.id, 'done');
      progress('done');
      log.info({ run: run.id, ...counts }, 'OPC UA discovery done');
    } catch (err) {
      runs.finish(run.id, 'failed', (err as Error).message);
      progress('failed');
      log.error({ err, run: run.id }, 'OPC UA discovery failed');
    }
  }

  /**
   * Marks offline each server online in the inventory that a finished run
   * looked for where discovery last found it (`looked` its endpoint URL)
   * and did not find. Its last seen stays: it was not seen.
   */
  private markMissing(run: DiscoveryRun, found: ReadonlySet<string>, looked: (url: string) => boolean): void {
    const { devices, store, log } = this.deps;
    for (const device of devices.list({ protocol: 'opcua' })) {
      if (!device.online || found.has(device.id) || device.state === 'decommissioned') continue;
      const url = (device.source.opcua as { endpointUrl?: unknown } | undefined)?.endpointUrl;
      if (typeof url !== 'string' || !looked(url)) continue;
      if (store.transaction(() => devices.offline(device.id)))
        log.info({ run: run.id, device: device.id, endpointUrl: url }, 'OPC UA server not found where it was: offline');
    }
  }

  /** The URL to contact for a URL an LDS gave, or undefined when its address is outside the ranges. */
  private async allowed(url: string, ranges: readonly Range[], timeoutMs: number): Promise<string | undefined> {
    const at = hostOf(url);
    if (!at) return undefined;
    let ip = at.host;
    if (!isIPv4(ip)) {
      try {
        let timer: NodeJS.Timeout | undefined;
        ip = await Promise.race([
          lookup(at.host, { family: 4 }).then((r) => r.address),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new TimeoutError('lookup timed out')), timeoutMs))),
        ]).finally(() => clearTimeout(timer));
      } catch {
        return undefined;
      }
    }
    if (!contains(ranges, ip)) return undefined;
    const u = new URL(url);
    u.hostname = ip;
    return u.toString();
  }

  private record(
    run: DiscoveryRun,
    counts: { done: number; found: number; errors: number; total: number },
    t: Parameters<DiscoveryRunRepository['target']>[1],
  ): void {
    this.deps.runs.target(run.id, t);
    counts.done += 1;
    if (t.status === 'found') counts.found += 1;
    if (t.status === 'error') counts.errors += 1;
  }

  /** Creates or updates the server's inventory record; returns its id. */
  private recordServer(run: DiscoveryRun, f: OpcuaServerFacts): string {
    const { devices, store } = this.deps;
    const name = serverName(f.applicationUri);
    const first = f.devices?.[0];
    const nameplate: Nameplate = {};
    const set = (key: keyof Nameplate, v: string | undefined) => v !== undefined && (nameplate[key] = v);
    set('manufacturer', first?.manufacturer ?? f.buildInfo?.manufacturerName);
    set('model', first?.model ?? f.buildInfo?.productName);
    set('serialNumber', first?.serialNumber);
    set('hardwareRevision', first?.hardwareRevision);
    set('firmwareVersion', first?.softwareRevision ?? f.buildInfo?.softwareVersion);
    set('displayName', f.applicationName);
    const source = {
      opcua: {
        endpointUrl: f.endpointUrl,
        applicationUri: f.applicationUri,
        ...(f.productUri ? { productUri: f.productUri } : {}),
        ...(f.certificateThumbprint ? { certificateThumbprint: f.certificateThumbprint } : {}),
        firstCertificateThumbprint: undefined as string | undefined,
        security: f.endpoints.map((e) => `${e.securityMode}/${e.securityPolicy}`).filter((v, i, a) => a.indexOf(v) === i),
        ...(f.buildInfo ? { buildInfo: f.buildInfo } : {}),
        ...(f.devices ? { deviceSet: f.devices } : {}),
        ...(f.serverConfiguration !== undefined ? { serverConfiguration: f.serverConfiguration } : {}),
        ...(f.nameplateError ? { nameplateError: f.nameplateError } : {}),
      },
    };
    return store.transaction(() => {
      const known = devices.byName('opcua', name);
      // The certificate the server had when it was first found stays on record: a policy rule may name it.
      const first = (known?.source.opcua as { firstCertificateThumbprint?: string } | undefined)?.firstCertificateThumbprint ?? f.certificateThumbprint;
      if (first) source.opcua.firstCertificateThumbprint = first;
      const before = known?.source.opcua as { certificateThumbprint?: string; endpointUrl?: string } | undefined;
      const changed =
        !known ||
        before?.certificateThumbprint !== f.certificateThumbprint ||
        before?.endpointUrl !== f.endpointUrl ||
        JSON.stringify(known.source.opcua) !== JSON.stringify(source.opcua);
      if (known && (!changed || known.state === 'decommissioned')) {
        devices.touch(known.id, true);
        return known.id;
      }
      const cause = !known
        ? `found by discovery run ${run.id} at ${f.endpointUrl}`
        : before?.certificateThumbprint !== f.certificateThumbprint
          ? `server certificate changed (${before?.certificateThumbprint ?? 'none'} -> ${f.certificateThumbprint ?? 'none'}), seen by discovery run ${run.id}`
          : `details changed, seen by discovery run ${run.id}`;
      return devices.apply({
        protocol: 'opcua',
        name,
        to: known?.state ?? 'discovered',
        cause,
        actor: 'discovery',
        details: { run: run.id, endpointUrl: f.endpointUrl },
        patch: { nameplate, source, online: true },
      }).id;
    });
  }
}
