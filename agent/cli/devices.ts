import type { Command } from 'commander';
import { ENROLLMENT_TOKEN_DEFAULTS, MAX_ENROLLMENT_TOKEN_SECONDS, MAX_ENROLLMENT_TOKEN_USES } from '../api/enrollmentRoutes.js';
import { DEVICE_ID_PATTERN } from '../../certs/profiles/deviceId.js';
import type { Config } from '../config/schema.js';
import { ExitCode, RefusedError, UsageError } from '../errors.js';
import { DEVICE_STATES as STATES, type Device, type DeviceState, type Protocol } from '../inventory/device.js';
import { daemonRunning } from '../lifecycle/instanceLock.js';
import { crlStatusText } from '../onboarding/opcuaCrl.js';
import type { RevocationReason } from '../../certs/store.js';
import {
  defaultRevocationReason,
  isRevocationReason,
  retiresDevice,
  REVOCATION_REASONS,
  type DeviceAction,
  type DeviceActionKind,
} from '../store/actionRepository.js';
import { deviceDetails, type DeviceDetails } from '../store/deviceDetails.js';
import type { TokenRecord } from '../store/enrollmentRepository.js';
import type { DeviceSync } from '../store/syncRepository.js';
import { apiOptions, runApi, type ApiOptions } from './apiCommand.js';
import { deviceConfigurationLine } from './deviceConfiguration.js';
import { actorLabel, localAudit, readStore, withStore } from './common.js';

/** "pump-7" and "mqtt:pump-7" both name the MQTT device pump-7. */
export function deviceId(ref: string): string {
  const id = ref.includes(':') ? ref : `mqtt:${ref}`;
  const [protocol, name = ''] = id.split(/:(.*)/s);
  if ((protocol !== 'mqtt' && protocol !== 'opcua') || !DEVICE_ID_PATTERN.test(name))
    throw new UsageError(`${JSON.stringify(ref)} is not a device id (such as pump-7 or mqtt:pump-7)`);
  return id;
}

function parseDuration(text: string): number {
  const m = /^(\d+)\s*(m|h|d|w)$/.exec(text.trim());
  if (!m || Number(m[1]) === 0) throw new UsageError(`--expires takes a duration such as 30m, 12h, 7d or 2w, not ${JSON.stringify(text)}`);
  return Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] as 'm' | 'h' | 'd' | 'w'];
}

/** A device's own location as `site=... line=...`; undefined when it has none (the gateway's sync.location applies). */
const locationText = (d: Device): string | undefined =>
  d.location && Object.keys(d.location).length > 0
    ? Object.entries(d.location)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')
    : undefined;

const table = (rows: Device[]): string =>
  rows.length === 0
    ? 'no devices\n'
    : `${['DEVICE', 'STATE', 'ONLINE', 'MANUFACTURER', 'MODEL', 'SERIAL', 'ASSET TAG', 'LOCATION', 'LAST SEEN'].join('\t')}\n${rows
        .map((d) =>
          [
            d.id,
            d.state + (d.blocked ? ' (blocked)' : ''),
            d.online ? 'yes' : 'no',
            d.nameplate.manufacturer ?? '-',
            d.nameplate.model ?? '-',
            d.nameplate.serialNumber ?? '-',
            d.assetTag ?? '-',
            locationText(d) ?? '-',
            d.lastSeen.toISOString(),
          ].join('\t'),
        )
        .join('\n')}\n`;

type ActionResult = { action: DeviceAction; waited: boolean; daemonRunning: boolean };

/**
 * Queues a technician's decision for the daemon (which alone holds the CA key
 * and the broker) and waits for its outcome while the daemon runs.
 */
async function queueAction(
  config: Config,
  ref: string,
  kind: DeviceActionKind,
  o: { reason?: string; note?: string; actor?: string; wait: string; request?: string },
): Promise<ActionResult> {
  const id = deviceId(ref);
  const waitMs = Number(o.wait) * 1000;
  if (!Number.isFinite(waitMs) || waitMs < 0 || waitMs > 3_600_000) throw new UsageError('--wait takes seconds from 0 to 3600');
  return withStore(config, async (store, repos) => {
    const device = repos.devices.get(id);
    if (!device) throw new UsageError(`no device ${id} in the inventory (see edge-agent devices list)`);
    const { actions } = repos;
    // The login of the real uid (never $SUDO_USER or $USER, which anyone can set); a name given with --actor is kept beside it.
    const actor = actorLabel(o.actor);
    if (o.request !== undefined && !/^[A-Za-z0-9._:-]{1,128}$/.test(o.request))
      throw new UsageError(`--request takes a request id (see edge-agent devices show ${ref})`);
    // A revoke or decommission: --reason is the CRL reason (checked by the caller), --note the free text.
    const details = retiresDevice(kind)
      ? { reason: o.note ?? '', ...(o.reason ? { crlReason: o.reason as RevocationReason } : {}) }
      : { reason: o.reason ?? '', ...(o.request ? { requestId: o.request } : {}) };
    let action = store.durable(() => {
      const queued = actions.enqueue(id, kind, actor, details);
      localAudit(repos.audit, `device.${kind}`, id, {
        action: queued.id,
        by: actor,
        ...(o.reason ? { reason: o.reason } : {}),
        ...(o.note ? { note: o.note } : {}),
      });
      return queued;
    });
    const running = daemonRunning(config.agent.dataDir);
    const deadline = Date.now() + waitMs;
    while (running && !action.doneAt && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      action = actions.get(action.id)!;
    }
    if (action.outcome === 'refused') throw new RefusedError(`${kind} refused: ${action.error}`);
    return { action, waited: running, daemonRunning: running };
  });
}

const actionText = (r: ActionResult): string =>
  r.action.outcome
    ? `${r.action.deviceId}: ${r.action.outcome}\n`
    : r.daemonRunning
      ? `${r.action.deviceId}: ${r.action.action} queued (action ${r.action.id}); the daemon has not carried it out yet\n`
      : `${r.action.deviceId}: ${r.action.action} queued (action ${r.action.id}); the daemon is not running and carries it out when it starts\n`;

/** `devices show`: the API's answer (dates revived) or the same query on the database. */
type Shown = DeviceDetails;

/** A device as the API sends it (dates as text) made whole again. */
const revive = (d: Device): Device => ({ ...d, firstSeen: new Date(d.firstSeen), lastSeen: new Date(d.lastSeen), updatedAt: new Date(d.updatedAt) });

const usage = (message: string): number => {
  process.stderr.write(`edge-agent: ${message}\n`);
  return ExitCode.usage;
};

/** Where the device stands with the CMMS, in one line (dates arrive as text from the API). */
const syncText = (s: DeviceSync): string =>
  s.state === 'waiting'
    ? `revision ${s.revision} waits since ${new Date(s.since).toISOString()}${s.sending ? ' (being sent)' : ''}`
    : s.state === 'refused'
      ? `revision ${s.revision} refused by the receiver${s.status ? ` (${s.status})` : ''}: ${s.error} (edge-agent sync dead-letters)`
      : s.state === 'off'
        ? 'off (sync.enabled: false)'
        : 'up to date with the receiver';

const showText = (r: Shown): string =>
  [
    `${r.device.id}: ${r.device.state}${r.device.blocked ? ' (blocked by a technician)' : ''}${r.device.online ? ', online' : ''}`,
    ...Object.entries(r.device.nameplate).map(([k, v]) => `  ${k}: ${v}`),
    r.device.assetTag ? `  asset tag: ${r.device.assetTag}` : '',
    r.device.location
      ? `  location: ${Object.entries(r.device.location)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ')}`
      : '',
    r.device.certificateSerial ? `  certificate: ${r.device.certificateSerial}` : '',
    r.device.reason ? `  reason: ${r.device.reason}` : '',
    `  first seen ${r.device.firstSeen.toISOString()}, last seen ${r.device.lastSeen.toISOString()}, revision ${r.device.revision}`,
    ...r.pendingRequests.map((p) => `  waiting: request ${p.requestId}, key SHA-256 ${p.spkiSha256}, received ${p.receivedAt.toISOString()} (${p.reason})`),
    r.push ? `  push: ${r.push.status} at ${r.push.step}, ${r.push.attempts} attempt(s) (edge-agent opcua push-status --id ${r.device.id})` : '',
    r.push && crlStatusText(r.push) ? `  CRLs: ${crlStatusText(r.push)}` : '',
    r.sync ? `  sync: ${syncText(r.sync)}` : '',
    deviceConfigurationLine(r.configuration),
    'history:',
    ...r.history.map((e) => `  ${e.at.toISOString()}  ${e.from ?? '(new)'} -> ${e.to}  ${e.actor}: ${e.cause}`),
    '',
  ]
    .filter((l) => l !== '')
    .join('\n') + '\n';

export function registerDeviceCommands(program: Command, result: { code: number }): void {
  const devices = program.command('devices').description('the device inventory: list, inspect, approve, reject, revoke; enrollment tokens');

  apiOptions(
    devices
      .command('list')
      .description('every device with its state (reads the database when the daemon is down)')
      .option('--state <state>', `only devices in this state: ${STATES.join(', ')}`)
      .option('--protocol <protocol>', 'only mqtt or opcua devices'),
  ).action(async (o: ApiOptions & { state?: string; protocol?: string }) => {
    if (o.state !== undefined && !STATES.includes(o.state as DeviceState)) return void (result.code = usage(`--state must be one of ${STATES.join(', ')}`));
    if (o.protocol !== undefined && o.protocol !== 'mqtt' && o.protocol !== 'opcua') return void (result.code = usage('--protocol must be mqtt or opcua'));
    const filter = { ...(o.state ? { state: o.state as DeviceState } : {}), ...(o.protocol ? { protocol: o.protocol as Protocol } : {}) };
    result.code = await runApi(
      o,
      async (client) => {
        const items: Device[] = [];
        for (let total = Infinity; items.length < total; ) {
          const page = (
            await client.call<{ total: number; items: Device[] }>(
              'GET',
              `/api/v1/devices?${new URLSearchParams({ ...filter, limit: '1000', offset: String(items.length) })}`,
            )
          ).body;
          total = page.total;
          items.push(...page.items.map(revive));
          if (page.items.length === 0) break;
        }
        return items;
      },
      table,
      { what: 'read from the database directly', run: (config) => readStore(config, (_store, repos) => repos.devices.list(filter)) },
    );
  });

  apiOptions(
    devices
      .command('show')
      .description('one device: its record, its requests waiting, its history (reads the database when the daemon is down)')
      .argument('<device>', 'device id, such as pump-7 or mqtt:pump-7'),
  ).action(async (ref: string, o: ApiOptions) => {
    let id: string;
    try {
      id = deviceId(ref);
    } catch (err) {
      return void (result.code = usage((err as Error).message));
    }
    result.code = await runApi(
      o,
      async (client) => {
        const r = (await client.call<Shown>('GET', `/api/v1/devices/${encodeURIComponent(id)}`)).body;
        return {
          ...r,
          device: revive(r.device),
          history: r.history.map((e) => ({ ...e, at: new Date(e.at) })),
          pendingRequests: r.pendingRequests.map((p) => ({ ...p, receivedAt: new Date(p.receivedAt) })),
        };
      },
      showText,
      {
        what: 'read from the database directly',
        run: (config) =>
          readStore(config, (_store, repos) => {
            const details = deviceDetails(repos, id);
            if (!details) throw new UsageError(`no device ${id} in the inventory`);
            return config.sync.enabled ? details : { ...details, sync: { state: 'off' as const } };
          }),
      },
    );
  });

  apiOptions(
    devices
      .command('set')
      .description("set a device's asset tag and place in the plant (sent upstream to the CMMS); needs the running daemon")
      .argument('<device>', 'device id, such as pump-7 or opcua:...')
      .option('--asset-tag <tag>', "the plant's asset tag ('' clears it)")
      .option('--site <name>', "site ('' clears it; fields not given stay as they are)")
      .option('--area <name>', 'area')
      .option('--line <name>', 'line')
      .option('--cell <name>', 'cell')
      .option('--clear-location', "remove the location set on the device (the gateway's sync.location applies again)"),
    false,
  ).action(async (ref: string, o: ApiOptions & { assetTag?: string; site?: string; area?: string; line?: string; cell?: string; clearLocation?: boolean }) => {
    let id: string;
    try {
      id = deviceId(ref);
    } catch (err) {
      return void (result.code = usage((err as Error).message));
    }
    const fields = Object.fromEntries((['site', 'area', 'line', 'cell'] as const).filter((f) => o[f] !== undefined).map((f) => [f, o[f] === '' ? null : o[f]]));
    if (o.clearLocation && Object.keys(fields).length > 0) return void (result.code = usage('--clear-location goes without --site, --area, --line and --cell'));
    const body = {
      ...(o.assetTag !== undefined ? { assetTag: o.assetTag === '' ? null : o.assetTag } : {}),
      ...(o.clearLocation ? { location: null } : Object.keys(fields).length > 0 ? { location: fields } : {}),
    };
    if (Object.keys(body).length === 0) return void (result.code = usage('give --asset-tag, a location (--site, --area, --line, --cell) or --clear-location'));
    result.code = await runApi(
      o,
      async (client, config) => {
        const device = revive((await client.call<{ device: Device }>('PUT', `/api/v1/devices/${encodeURIComponent(id)}/annotation`, body)).body.device);
        // Whether the running daemon syncs (sync.enabled needs a restart, so the file may say otherwise); the change is made either way.
        const syncing = await client.call<{ enabled: boolean }>('GET', '/api/v1/sync/status').then(
          (r) => r.body.enabled,
          () => config.sync.enabled,
        );
        return { device, syncEnabled: syncing };
      },
      ({ device: d, syncEnabled }: { device: Device; syncEnabled: boolean }) =>
        `${d.id}: asset tag ${d.assetTag ?? '(none)'}, location ${locationText(d) ?? "(the gateway's)"}; revision ${d.revision} ` +
        `${syncEnabled ? 'queued for the sync' : 'saved; the sync is off (sync.enabled: false): nothing is sent to the CMMS'}\n`,
    );
  });

  const decisions: [DeviceActionKind, string][] = [
    ['approve', "approve the request waiting (or the device's next request, if it has not asked yet)"],
    ['reject', 'reject the requests waiting; later requests wait for a technician'],
    ['revoke', 'revoke the device certificate and cut the device off the broker'],
    ['decommission', 'retire the device for good: revoke its certificate, refuse its requests'],
  ];
  for (const [kind, description] of decisions) {
    const command = devices
      .command(kind)
      .description(`${description}${kind === 'revoke' || kind === 'decommission' ? ' (administrators)' : ''}`)
      .argument('<device>', 'device id, such as pump-7 or mqtt:pump-7');
    if (kind === 'revoke' || kind === 'decommission') {
      command
        .option('--reason <reason>', `why, as the CRL says it: ${REVOCATION_REASONS.join(', ')} (default ${defaultRevocationReason(kind)})`)
        .option('--note <text>', 'free text beside the reason, for the device history and the audit log');
    } else command.option('--reason <text>', 'why (recorded in the device history and the audit log)');
    command
      .option(
        '--actor <name>',
        'who decides, when the decision is queued in the database with --local: ' +
          "recorded beside the login of the real user id, which alone is the default; through the API it is the token's user",
      )
      .option('--wait <seconds>', 'how long to wait for the daemon to carry it out (at most 60 through the API)', '15');
    if (kind === 'approve')
      command.option('--request <id>', 'the request to approve (devices show lists them with their key); needed when several wait with different keys');
    apiOptions(command).action(async (ref: string, o: ApiOptions & { reason?: string; note?: string; actor?: string; wait: string; request?: string }) => {
      let id: string;
      try {
        id = deviceId(ref);
      } catch (err) {
        return void (result.code = usage((err as Error).message));
      }
      if ((kind === 'revoke' || kind === 'decommission') && o.reason !== undefined && !isRevocationReason(o.reason)) {
        return void (result.code = usage(
          `--reason ${JSON.stringify(o.reason)} is not a revocation reason: ` +
            `give one of ${REVOCATION_REASONS.join(', ')} (it goes into the CRL), and any free text with --note`,
        ));
      }
      const wait = Number(o.wait);
      if (!Number.isInteger(wait) || wait < 0 || wait > 3_600) return void (result.code = usage('--wait takes whole seconds from 0 to 3600'));
      result.code = await runApi(
        o,
        async (client) => {
          const body = {
            ...(o.reason ? { reason: o.reason } : {}),
            ...(o.note ? { note: o.note } : {}),
            ...(o.request ? { request: o.request } : {}),
            wait: Math.min(wait, 60),
          };
          const r = await client.call<{ action: DeviceAction }>('POST', `/api/v1/devices/${encodeURIComponent(id)}/${kind}`, body);
          return { action: r.body.action, waited: true, daemonRunning: true };
        },
        actionText,
        { what: `${kind} queued in the database for the daemon`, writes: true, run: (config) => queueAction(config, id, kind, o) },
      );
    });
  }

  const token = devices.command('token').description('enrollment tokens (stored hashed; the secret is shown once)');
  type MadeToken = { token: string; record: TokenRecord };
  apiOptions(
    token
      .command('create')
      .description('create a token devices present as enrollmentToken (technicians and administrators; audited)')
      .option('--label <text>', 'what it is for', ENROLLMENT_TOKEN_DEFAULTS.label)
      .option('--uses <n>', 'how many devices may use it', String(ENROLLMENT_TOKEN_DEFAULTS.uses))
      .option('--expires <duration>', 'validity, such as 30m, 12h, 7d (at most 366d)', '24h'),
  ).action(async (o: ApiOptions & { label: string; uses: string; expires: string }) => {
    const uses = Number(o.uses);
    if (!Number.isInteger(uses) || uses < 1 || uses > MAX_ENROLLMENT_TOKEN_USES)
      return void (result.code = usage(`--uses takes a whole number from 1 to ${MAX_ENROLLMENT_TOKEN_USES}`));
    if (o.label.length === 0 || o.label.length > 128) return void (result.code = usage('--label takes 1 to 128 characters'));
    let seconds: number;
    try {
      seconds = parseDuration(o.expires) / 1000;
    } catch (err) {
      return void (result.code = usage((err as Error).message));
    }
    if (seconds > MAX_ENROLLMENT_TOKEN_SECONDS) return void (result.code = usage('--expires takes at most 366d'));
    result.code = await runApi(
      o,
      async (client) => {
        const r = (await client.call<MadeToken>('POST', '/api/v1/enrollment-tokens', { label: o.label, uses, expiresInSeconds: seconds })).body;
        return { token: r.token, record: { ...r.record, expiresAt: new Date(r.record.expiresAt) } };
      },
      (r: MadeToken) => `${r.token}\n(token ${r.record.id}: ${r.record.maxUses} use(s), until ${r.record.expiresAt.toISOString()}; it is not shown again)\n`,
      {
        what: 'making the token in the database directly',
        writes: true,
        run: (config) =>
          withStore(config, (store, repos) =>
            store.durable(() => {
              const made = repos.enrollments.createToken(o.label, uses, new Date(Date.now() + seconds * 1000));
              localAudit(repos.audit, 'enrollmentToken.create', `enrollment token ${made.record.id}`, {
                label: o.label,
                maxUses: uses,
                expiresAt: made.record.expiresAt.toISOString(),
              });
              return made;
            }),
          ),
      },
    );
  });
  /** A token as the API sends it (dates as text) made whole again. */
  const tokenDates = (t: TokenRecord): TokenRecord => ({
    ...t,
    expiresAt: new Date(t.expiresAt),
    createdAt: new Date(t.createdAt),
    ...(t.revokedAt ? { revokedAt: new Date(t.revokedAt) } : {}),
  });
  apiOptions(token.command('list').description('tokens with their uses and expiry, never the secret (reads the database when the daemon is down)')).action(
    async (o: ApiOptions) => {
      result.code = await runApi(
        o,
        async (client) => {
          const items: TokenRecord[] = [];
          for (let total = Infinity; items.length < total; ) {
            const page = (await client.call<{ total: number; items: TokenRecord[] }>('GET', `/api/v1/enrollment-tokens?limit=1000&offset=${items.length}`))
              .body;
            total = page.total;
            items.push(...page.items.map(tokenDates));
            if (page.items.length === 0) break;
          }
          return items;
        },
        (rows: TokenRecord[]) =>
          rows.length === 0
            ? 'no tokens\n'
            : rows
                .map((t) => {
                  const state = t.revokedAt ? 'revoked' : t.expiresAt < new Date() ? 'expired' : `until ${t.expiresAt.toISOString()}`;
                  return `${t.id}\t${t.uses}/${t.maxUses}\t${state}\t${t.label}`;
                })
                .join('\n') + '\n',
        { what: 'read from the database directly', run: (config) => readStore(config, (_store, repos) => repos.enrollments.tokens()) },
      );
    },
  );
  apiOptions(
    token
      .command('revoke')
      .description('make a token unusable at once (technicians and administrators; audited)')
      .argument('<id>', 'token id (from token list)'),
  ).action(async (id: string, o: ApiOptions) => {
    result.code = await runApi(
      o,
      async (client) => ({
        revoked: (await client.call<{ token: TokenRecord }>('POST', `/api/v1/enrollment-tokens/${encodeURIComponent(id)}/revoke`)).body.token.id,
      }),
      (r: { revoked: string }) => `token ${r.revoked} revoked\n`,
      {
        what: 'revoking the token in the database directly',
        writes: true,
        run: (config) =>
          withStore(config, (store, repos) =>
            store.durable(() => {
              const repo = repos.enrollments;
              const found = repo.token(id);
              if (!found) throw new UsageError(`no enrollment token ${id} (edge-agent devices token list)`);
              if (!repo.revokeToken(id)) throw new RefusedError(`enrollment token ${id} is already revoked`);
              localAudit(repos.audit, 'enrollmentToken.revoke', `enrollment token ${id}`, { label: found.label, uses: found.uses, maxUses: found.maxUses });
              return { revoked: id };
            }),
          ),
      },
    );
  });
}
