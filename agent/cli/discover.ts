import type { Command } from 'commander';
import { ExitCode, UsageError } from '../errors.js';
import type { AgentEvents } from '../events.js';
import type { Device } from '../inventory/device.js';
import type { DiscoveryRun, DiscoveryTarget } from '../store/discoveryRunRepository.js';
import type { ApiClient } from './apiClient.js';
import { apiOptions, runApi, type ApiOptions } from './apiCommand.js';
import { collect } from './common.js';

type Progress = AgentEvents['discovery.progress'];
interface Followed {
  run: DiscoveryRun;
  targets: DiscoveryTarget[];
}
export interface DiscoverResult {
  runs: Followed[];
  /** Every event of every run's stream, in the order received (ids increase per run). */
  events: { runId: number; id: number; event: string; data: unknown }[];
  /** The inventory records of what the runs found. */
  devices: Device[];
  /** Runs still going when --wait ran out. */
  unfinished: number[];
}

const BAR = 30;

/** One line: a bar per run, then the counts. */
function progressLine(states: Map<number, { protocol: string; p?: Progress; status: string }>): string {
  return [...states.entries()]
    .map(([id, s]) => {
      const p = s.p;
      const total = p?.phase === 'scanning' && p.scanned ? p.scanned.total : (p?.total ?? 0);
      const done = p?.phase === 'scanning' && p.scanned ? p.scanned.done : (p?.done ?? 0);
      const filled = total > 0 ? Math.round((done / total) * BAR) : 0;
      const what = p?.phase === 'scanning' ? 'addresses' : 'targets';
      return (
        `${s.protocol} run ${id} [${'#'.repeat(filled)}${'.'.repeat(BAR - filled)}] ${p?.phase ?? s.status} ` +
        `${done}/${total} ${what}, ${p?.found ?? 0} found, ${p?.errors ?? 0} errors`
      );
    })
    .join(' | ');
}

export const discoverTable = (r: DiscoverResult): string => {
  const lines = r.runs.map(
    (f) =>
      `run ${f.run.id} (${f.run.protocol}): ${f.run.status}${f.run.error ? ` (${f.run.error})` : ''}, ` +
      `${f.run.found} found, ${f.run.errors} errors, ${f.run.targetsDone}/${f.run.targetsTotal} targets`,
  );
  const byId = new Map(r.devices.map((d) => [d.id, d]));
  const rows = r.runs
    .flatMap((f) => f.targets.filter((t) => t.status === 'found' && t.deviceId))
    .filter((t, i, all) => all.findIndex((o) => o.deviceId === t.deviceId) === i);
  const table =
    rows.length === 0
      ? 'nothing found\n'
      : `${['DEVICE', 'STATE', 'MANUFACTURER', 'MODEL', 'SERIAL', 'FOUND AT'].join('\t')}\n${rows
          .map((t) => {
            const d = byId.get(t.deviceId!);
            return [t.deviceId, d?.state ?? '?', d?.nameplate.manufacturer ?? '-', d?.nameplate.model ?? '-', d?.nameplate.serialNumber ?? '-', t.target].join(
              '\t',
            );
          })
          .join('\n')}\n`;
  const problems = r.runs.flatMap((f) => f.targets.filter((t) => t.status === 'error').map((t) => `  error at ${t.target}: ${t.detail ?? ''}`));
  const late =
    r.unfinished.length > 0 ? [`still running after --wait: ${r.unfinished.join(', ')} (the daemon carries on; edge-agent discover --follow ID)`] : [];
  return `${[...lines, ...problems, ...late].join('\n')}\n${table}`;
};

/** Follows runs to their end (or --wait), drawing the progress on stderr. */
async function follow(client: ApiClient, runs: DiscoveryRun[], waitMs: number, draw: boolean): Promise<DiscoverResult> {
  const events: DiscoverResult['events'] = [];
  const states = new Map(runs.map((r) => [r.id, { protocol: r.protocol, status: r.status } as { protocol: string; p?: Progress; status: string }]));
  const tty = process.stderr.isTTY === true;
  let last = '';
  let lastAt = 0;
  const render = (force = false) => {
    if (!draw) return;
    const line = progressLine(states);
    if (line === last || (!force && !tty && Date.now() - lastAt < 1_000)) return;
    last = line;
    lastAt = Date.now();
    process.stderr.write(tty ? `\r\u001b[2K${line}` : `${line}\n`);
  };
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), waitMs);
  const ended = new Map<number, Followed>();
  try {
    await Promise.all(
      runs.map((r) =>
        client.events(
          `/api/v1/discovery/runs/${r.id}/events`,
          (event, data, id) => {
            events.push({ runId: r.id, id, event, data });
            const s = states.get(r.id)!;
            if (event === 'progress') s.p = data as Progress;
            if (event === 'run') s.status = (data as DiscoveryRun).status;
            if (event === 'end') {
              ended.set(r.id, data as Followed);
              s.status = (data as Followed).run.status;
            }
            render(event !== 'progress');
          },
          abort.signal,
        ),
      ),
    );
  } finally {
    clearTimeout(timer);
  }
  if (draw && tty) process.stderr.write('\n');
  const unfinished = runs.filter((r) => !ended.has(r.id)).map((r) => r.id);
  const finals = await Promise.all(runs.map(async (r) => ended.get(r.id) ?? (await client.call<Followed>('GET', `/api/v1/discovery/runs/${r.id}`)).body));
  const ids = new Set(finals.flatMap((f) => f.targets.map((t) => t.deviceId).filter((d): d is string => d !== undefined)));
  const devices = await Promise.all(
    [...ids].map(async (id) => (await client.call<{ device: Device }>('GET', `/api/v1/devices/${encodeURIComponent(id)}`)).body.device),
  );
  return { runs: finals, events, devices, unfinished };
}

export function registerDiscoverCommand(program: Command, result: { code: number }): void {
  apiOptions(
    program
      .command('discover')
      .description('ask the running daemon for a discovery, show its progress, then a table of what it found')
      .option('--opcua', 'OPC UA servers (default: every protocol enabled in the configuration)')
      .option('--mqtt', 'MQTT devices: their retained announcements on the broker')
      .option(
        '--target <url|cidr>',
        'OPC UA only: an opc.tcp:// URL or an IPv4 range inside opcua.scan.ranges, instead of the configured ones (repeatable)',
        collect,
      )
      .option('--follow <run>', 'follow a run already started (by id) instead of starting one')
      .option('--cancel <run>', 'cancel a run (by id)')
      .option('--wait <seconds>', 'how long to follow; the daemon carries on after', '600')
      .addHelpText(
        'after',
        '\nExit codes: 0 every run done; 1 a run failed, was cancelled or is still running after --wait; 64 bad targets or options, or no such run; ' +
          '69 the daemon is not running; 77 no token, or the token or role does not allow it.',
      ),
    false,
  ).action(async (o: ApiOptions & { opcua?: boolean; mqtt?: boolean; target?: string[]; follow?: string; cancel?: string; wait: string }) => {
    let outcome: DiscoverResult | undefined;
    const waitMs = Number(o.wait) * 1000;
    if (!Number.isFinite(waitMs) || waitMs < 1000 || waitMs > 86_400_000) {
      process.stderr.write('edge-agent: --wait takes seconds from 1 to 86400\n');
      result.code = ExitCode.usage;
      return;
    }
    const code = await runApi(
      o,
      async (client) => {
        if (o.cancel !== undefined) {
          if (!/^\d+$/.test(o.cancel)) throw new UsageError('--cancel takes a run id');
          const cancelled = (await client.call<{ run: DiscoveryRun }>('POST', `/api/v1/discovery/runs/${o.cancel}/cancel`)).body.run;
          outcome = await follow(client, [cancelled], waitMs, false);
          return outcome;
        }
        let runs: DiscoveryRun[];
        if (o.follow !== undefined) {
          if (!/^\d+$/.test(o.follow)) throw new UsageError('--follow takes a run id');
          runs = [(await client.call<{ run: DiscoveryRun }>('GET', `/api/v1/discovery/runs/${o.follow}`)).body.run];
        } else {
          // Targets are OPC UA addresses: with them and no protocol named, only OPC UA runs.
          const protocols = [...(o.opcua || (o.target && !o.mqtt) ? ['opcua'] : []), ...(o.mqtt ? ['mqtt'] : [])];
          const body = { ...(protocols.length > 0 ? { protocols } : {}), ...(o.target ? { targets: o.target } : {}) };
          runs = (await client.call<{ runs: DiscoveryRun[] }>('POST', '/api/v1/discovery/runs', body)).body.runs;
          if (!o.json) process.stderr.write(`started ${runs.map((r) => `${r.protocol} run ${r.id}`).join(' and ')}\n`);
        }
        outcome = await follow(client, runs, waitMs, !o.json);
        return outcome;
      },
      discoverTable,
    );
    const failed = outcome !== undefined && (outcome.unfinished.length > 0 || outcome.runs.some((f) => f.run.status !== 'done'));
    result.code = code === ExitCode.ok && failed ? ExitCode.failure : code;
  });
}
