import { existsSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { stringify } from 'yaml';
import type { Affected } from '../configuration/configService.js';
import { parseProfileText, validateProfile } from '../configuration/profileDocument.js';
import type { ApplyResult } from '../configuration/profileManager.js';
import type { ProfileDiff } from '../configuration/resolve.js';
import { ExitCode, UsageError } from '../errors.js';
import type { ProfileSummary, ProfileVersion } from '../store/configRepository.js';
import type { DeviceConfiguration } from '../store/deviceDetails.js';
import { apiOptions, runApi, type ApiOptions } from './apiCommand.js';
import { collect, readStore } from './common.js';
import { deviceId } from './devices.js';

const usage = (message: string): number => {
  process.stderr.write(`edge-agent: ${message}\n`);
  return ExitCode.usage;
};

const positive = (text: string, what: string): number => {
  if (!/^\d{1,9}$/.test(text) || Number(text) < 1) throw new UsageError(`${what} takes a version number (1, 2, ...), not ${JSON.stringify(text)}`);
  return Number(text);
};

/** A profile file, read and checked here first: its problems are listed with their paths before anything is sent. */
function readProfile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const raw = parseProfileText(text);
  validateProfile(raw);
  return raw;
}

const shown = (v: unknown) => (v === undefined ? '(unset)' : JSON.stringify(v));
const counts = (c: Partial<Record<string, number>>) =>
  Object.entries(c)
    .map(([s, n]) => `${s} ${n}`)
    .join(', ') || '-';

const listText = (items: ProfileSummary[]): string =>
  items.length === 0
    ? 'no configuration profiles (edge-agent config-profiles apply FILE)\n'
    : `${['PROFILE', 'PROTOCOL', 'HEAD', 'LATEST', 'DEVICES'].join('\t')}\n${items
        .map((p) => [p.name, p.protocol, p.head, p.latest, counts(p.devices)].join('\t'))
        .join('\n')}\n`;

type Shown = ProfileVersion & {
  head: number;
  versions: { version: number; createdAt: string | Date; createdBy: string }[];
  devices: Partial<Record<string, number>>;
};
const showText = (r: Shown): string =>
  `# ${r.name} version ${r.version}${r.version === r.head ? ' (head)' : ` (head is ${r.head})`}, ${r.protocol}; devices: ${counts(r.devices)}\n` +
  `# versions: ${r.versions.map((v) => `${v.version} (${new Date(v.createdAt).toISOString()} by ${v.createdBy})`).join(', ')}\n` +
  stringify(r.document);

export const diffText = (d: ProfileDiff): string[] => [
  ...(d.fields.length > 0 ? [`  changed: ${d.fields.join(', ')}`] : []),
  ...d.values.map((c) => `  ${c.device ? `${c.device} ` : ''}${c.key}: ${shown(c.from)} -> ${shown(c.to)}`),
  ...(d.fields.length === 0 && d.values.length === 0 ? ['  no differences'] : []),
];

const affectedText = (a: Affected[]): string[] =>
  a.length === 0
    ? ['devices affected: none']
    : [
        `devices affected (${a.length}):`,
        ...a.map(
          (x) => `  ${x.deviceId}: ${x.from ? `${x.from.profile} v${x.from.version}` : '(none)'} -> ${x.to ? `${x.to.profile} v${x.to.version}` : '(none)'}`,
        ),
      ];

const applyText = (r: ApplyResult): string =>
  [
    r.dryRun
      ? `${r.name}: would ${r.outcome === 'unchanged' ? `change nothing (version ${r.version} is the head)` : `store version ${r.version}`}` +
        ' (dry run, nothing stored)'
      : r.outcome === 'unchanged'
        ? `${r.name}: unchanged (version ${r.version} is the head)`
        : `${r.name}: version ${r.version} stored${r.previous ? ` (was ${r.previous})` : ''}`,
    ...(r.outcome === 'created' ? diffText(r.diff) : []),
    ...affectedText(r.affected),
    ...r.warnings.map((w) => `warning: ${w}`),
    '',
  ].join('\n');

/** `edge-agent config-profiles ...` and `edge-agent devices label` (registered on the devices command). */
export function registerConfigProfileCommands(program: Command, result: { code: number }): void {
  const profiles = program
    .command('config-profiles')
    .description('configuration profiles: what provisioned devices are told to run (docs/device-configuration.md)');

  apiOptions(profiles.command('list').description('every profile: protocol, head and latest version, devices by status')).action(async (o: ApiOptions) => {
    result.code = await runApi(o, async (client) => (await client.call<{ items: ProfileSummary[] }>('GET', '/api/v1/config-profiles')).body.items, listText, {
      what: 'read from the database directly',
      run: (config) => readStore(config, (_s, repos) => repos.configs.list()),
    });
  });

  apiOptions(
    profiles
      .command('show')
      .description("a profile's document (its head, or the version given) and its versions")
      .argument('<name>', 'profile name')
      // A positional version: --version is the program's own (edge-agent --version), wherever it is written.
      .argument('[version]', 'a stored version (default: the head)'),
  ).action(async (name: string, given: string | undefined, o: ApiOptions) => {
    let v = 0;
    try {
      if (given !== undefined) v = positive(given, 'VERSION');
    } catch (err) {
      return void (result.code = usage((err as Error).message));
    }
    result.code = await runApi(
      o,
      async (client) => (await client.call<Shown>('GET', `/api/v1/config-profiles/${encodeURIComponent(name)}${v ? `?version=${v}` : ''}`)).body,
      showText,
    );
  });

  apiOptions(
    profiles
      .command('apply')
      .description('store a profile file (YAML or JSON) as a new version; the devices it selects get it (administrators)')
      .argument('<file>', 'the profile document')
      .option('--dry-run', 'say what would change and which devices, store nothing'),
    false,
  ).action(async (file: string, o: ApiOptions & { dryRun?: boolean }) => {
    result.code = await runApi(
      o,
      async (client) =>
        (await client.call<ApplyResult>('POST', o.dryRun ? '/api/v1/config-profiles/dry-run' : '/api/v1/config-profiles', readProfile(file))).body,
      applyText,
    );
  });

  apiOptions(
    profiles
      .command('diff')
      .description('what differs between two versions of a profile; or, given a file, between it and the head (value changes and devices affected)')
      .argument('<name-or-file>', 'a profile name, or a profile file')
      .option('--from <n>', 'the older version (default: the one before --to)')
      .option('--to <n>', 'the newer version (default: the head)'),
    false,
  ).action(async (what: string, o: ApiOptions & { from?: string; to?: string }) => {
    // A file that exists (or a path) is compared with the head; anything else names a stored profile.
    const isFile = what.includes('/') || existsSync(what);
    let query = '';
    try {
      if (isFile && (o.from || o.to)) throw new UsageError('--from and --to compare stored versions; a file is compared with the head');
      const q = new URLSearchParams({
        ...(o.from ? { from: String(positive(o.from, '--from')) } : {}),
        ...(o.to ? { to: String(positive(o.to, '--to')) } : {}),
      });
      query = q.size > 0 ? `?${q}` : '';
    } catch (err) {
      return void (result.code = usage((err as Error).message));
    }
    if (isFile) {
      result.code = await runApi(
        o,
        async (client) => (await client.call<ApplyResult>('POST', '/api/v1/config-profiles/dry-run', readProfile(what))).body,
        (r) => [`${r.name}: head ${r.previous ?? '(new profile)'} -> ${what}`, ...diffText(r.diff), ...affectedText(r.affected), ''].join('\n'),
      );
      return;
    }
    result.code = await runApi(
      o,
      async (client) =>
        (
          await client.call<ProfileDiff & { name: string; from: number | null; to: number }>(
            'GET',
            `/api/v1/config-profiles/${encodeURIComponent(what)}/diff${query}`,
          )
        ).body,
      (r) => [`${r.name}: version ${r.from ?? '(none)'} -> ${r.to}`, ...diffText(r), ''].join('\n'),
    );
  });

  apiOptions(
    profiles
      .command('rollback')
      .description('make an earlier version the one in force; its devices get it again (administrators)')
      .argument('<name>', 'profile name')
      .argument('<version>', 'the version to return to'),
    false,
  ).action(async (name: string, version: string, o: ApiOptions) => {
    let v: number;
    try {
      v = positive(version, 'VERSION');
    } catch (err) {
      return void (result.code = usage((err as Error).message));
    }
    result.code = await runApi(
      o,
      async (client) =>
        (
          await client.call<{ name: string; from: number; to: number; outcome: string; affected: Affected[] }>(
            'POST',
            `/api/v1/config-profiles/${encodeURIComponent(name)}/rollback`,
            { version: v },
          )
        ).body,
      (r) =>
        [
          r.outcome === 'unchanged' ? `${r.name}: version ${r.to} is already the head` : `${r.name}: head ${r.from} -> ${r.to}`,
          ...affectedText(r.affected),
          '',
        ].join('\n'),
    );
  });

  const assign = (device: string, profile: string | null, o: ApiOptions) => async () => {
    let id: string;
    try {
      id = deviceId(device);
    } catch (err) {
      return void (result.code = usage((err as Error).message));
    }
    result.code = await runApi(
      o,
      async (client) =>
        (
          await client.call<{ deviceId: string; pinned: string | null; affected: Affected[] }>(
            'PUT',
            `/api/v1/devices/${encodeURIComponent(id)}/config-profile`,
            { profile },
          )
        ).body,
      (r) => [`${r.deviceId}: ${r.pinned ? `pinned to ${r.pinned}` : 'unpinned (the selectors decide)'}`, ...affectedText(r.affected), ''].join('\n'),
    );
  };
  apiOptions(
    profiles
      .command('assign')
      .description('pin a device to a profile, whatever the selectors say')
      .argument('<device>', 'device id, such as pump-7 or opcua:press-1')
      .argument('<profile>', 'profile name'),
    false,
  ).action((device: string, profile: string, o: ApiOptions) => assign(device, profile, o)());
  apiOptions(profiles.command('unassign').description('unpin a device: the selectors decide again').argument('<device>', 'device id'), false).action(
    (device: string, o: ApiOptions) => assign(device, null, o)(),
  );

  const devices = program.commands.find((c) => c.name() === 'devices') ?? program.command('devices');
  apiOptions(
    devices
      .command('label')
      .description("set or remove a device's labels (configuration profiles select by them)")
      .argument('<device>', 'device id, such as pump-7 or mqtt:pump-7')
      .argument('[labels...]', 'key=value to set')
      .option('--remove <key>', 'a label to remove (repeatable)', collect),
    false,
  ).action(async (device: string, pairs: string[], o: ApiOptions & { remove?: string[] }) => {
    let id: string;
    const set: Record<string, string> = {};
    try {
      id = deviceId(device);
      for (const p of pairs) {
        const at = p.indexOf('=');
        if (at < 1) throw new UsageError(`${JSON.stringify(p)} is not key=value`);
        set[p.slice(0, at)] = p.slice(at + 1);
      }
      if (pairs.length === 0 && !o.remove?.length) throw new UsageError('give key=value labels to set, or --remove KEY');
    } catch (err) {
      return void (result.code = usage((err as Error).message));
    }
    result.code = await runApi(
      o,
      async (client) => {
        const path = `/api/v1/devices/${encodeURIComponent(id)}`;
        const current = (await client.call<{ configuration?: DeviceConfiguration }>('GET', path)).body.configuration?.labels ?? {};
        const labels = Object.fromEntries(Object.entries({ ...current, ...set }).filter(([k]) => !o.remove?.includes(k)));
        return (await client.call<{ deviceId: string; labels: Record<string, string>; affected: Affected[] }>('PUT', `${path}/labels`, { labels })).body;
      },
      (r) =>
        [
          `${r.deviceId}: labels ${
            Object.entries(r.labels)
              .map(([k, v]) => `${k}=${v}`)
              .join(' ') || '(none)'
          }`,
          ...affectedText(r.affected),
          '',
        ].join('\n'),
    );
  });
}
