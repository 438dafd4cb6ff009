import { request } from 'node:http';
import { join } from 'node:path';
import pino from 'pino';
import { Store } from '../../../agent/store/database.js';
import { DeviceRepository } from '../../../agent/store/deviceRepository.js';
import { DiscoveryRunRepository } from '../../../agent/store/discoveryRunRepository.js';
import type { SambaDc } from '../../helpers/samba.js';

/** One answer of the daemon's API. */
export interface Answer {
  status: number;
  body: Record<string, unknown> & { code?: string; message?: string };
  text: string;
  headers: Record<string, string | string[] | undefined>;
}

/** A client of one daemon's API on 127.0.0.1:port, with an optional Bearer and source address. */
export function apiClient(port: () => number) {
  const call = (method: string, path: string, options: { token?: string; body?: unknown; from?: string; headers?: Record<string, string> } = {}) =>
    new Promise<Answer>((resolve, reject) => {
      const payload = options.body === undefined ? undefined : Buffer.from(typeof options.body === 'string' ? options.body : JSON.stringify(options.body));
      const req = request(
        {
          host: '127.0.0.1',
          port: port(),
          path,
          method,
          ...(options.from ? { localAddress: options.from } : {}),
          headers: {
            host: `127.0.0.1:${port()}`,
            ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
            ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
            ...options.headers,
          },
        },
        (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () => {
            let body: Answer['body'] = {};
            if ((res.headers['content-type'] ?? '').startsWith('application/json')) body = JSON.parse(text) as Answer['body'];
            resolve({ status: res.statusCode ?? 0, body, text, headers: res.headers });
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  const login = (user: string, password: string, from?: string) => call('POST', '/api/v1/session', { body: { user, password }, ...(from ? { from } : {}) });
  return { call, login };
}

/** The groups and people of the test domain: who is in what, nested included. */
export const PEOPLE = {
  anna: { password: 'Anna-Pass1!x', groups: ['Shift-Leads'] },
  viewer1: { password: 'View-Pass1!x', groups: ['Plant-Viewers'] },
  con2: { password: 'Con2-Pass1!x', groups: ['Contractors-Line2'] },
  leaver: { password: 'Leav-Pass1!x', groups: ['Maintenance-Leads'] },
  mover: { password: 'Move-Pass1!x', groups: ['Maintenance-Leads', 'Plant-Viewers'] },
  promo: { password: 'Prom-Pass1!x', groups: ['Plant-Viewers'] },
  expiring: { password: 'Expi-Pass1!x', groups: ['Plant-Viewers'] },
  nobody1: { password: 'Nobo-Pass1!x', groups: [] as string[] },
  admin1: { password: 'Admi-Pass1!x', groups: ['Gateway-Admins'] },
} as const;

export type Person = keyof typeof PEOPLE;

/** Makes the groups (Shift-Leads nested in Maintenance-Leads) and the people of PEOPLE. */
export async function populate(dc: SambaDc): Promise<void> {
  for (const g of ['Maintenance-Leads', 'Shift-Leads', 'Plant-Viewers', 'Contractors-Line2', 'Gateway-Admins']) await dc.addGroup(g);
  await dc.addMembers('Maintenance-Leads', ['Shift-Leads']);
  for (const [name, p] of Object.entries(PEOPLE)) {
    await dc.addUser(name, p.password, { upn: `${name}@plant.test` });
    for (const g of p.groups) await dc.addMembers(g, [name]);
  }
}

/** auth.directory for the test domain: the mappings docs/directory.md shows as its example. */
export function directoryYaml(
  dc: SambaDc,
  extra: { recheckSeconds: number; caFile: string; passwordFile: string; url?: string; keepMinutes?: number },
): string[] {
  return [
    'auth:',
    '  directory:',
    '    enabled: true',
    `    url: ${extra.url ?? dc.url}`,
    `    caFile: ${extra.caFile}`,
    `    baseDn: ${dc.baseDn}`,
    `    bindDn: ${dc.serviceDn}`,
    `    bindPasswordFile: ${extra.passwordFile}`,
    `    recheckIntervalSeconds: ${extra.recheckSeconds}`,
    '    timeoutMs: 3000',
    '    connectTimeoutMs: 3000',
    '    offline:',
    `      keepSessionsMinutes: ${extra.keepMinutes ?? 60}`,
    '      cachedLogins: true',
    '      cachedLoginMaxAgeHours: 24',
    '    groups:',
    '      - { group: Maintenance-Leads, role: technician }',
    '      - { group: Plant-Viewers, role: viewer }',
    '      - { group: Gateway-Admins, role: admin }',
    '      - group: Contractors-Line2',
    '        role: contractor',
    '        scope: [{ line: L2 }]',
    '        until: "2099-12-31"',
    '        mayDecide: true',
    '        ranges: [127.0.61.0/30]',
  ];
}

/** Devices on lines L2 and L3 and one without a location (the gateway's: line L1), and a run of `leaver` that never starts. */
export function seed(dataDir: string): { leaverRun: number } {
  const { store } = Store.open(
    { path: join(dataDir, 'edge-agent.db'), busyTimeoutMs: 5000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
    pino({ level: 'silent' }),
  );
  const devices = new DeviceRepository(store);
  store.transaction(() => {
    devices.apply({ protocol: 'mqtt', name: 'l2-pump', to: 'discovered', cause: 'test', actor: 'test', patch: { location: { line: 'L2' } } });
    devices.apply({ protocol: 'mqtt', name: 'l3-press', to: 'discovered', cause: 'test', actor: 'test', patch: { location: { line: 'L3' } } });
    devices.apply({ protocol: 'mqtt', name: 'gw-meter', to: 'discovered', cause: 'test', actor: 'test' });
  });
  // MQTT is off in this daemon: nobody starts the run, so its progress stream stays open until something ends it.
  const leaverRun = new DiscoveryRunRepository(store).request('mqtt', 'technician', 'leaver').id;
  store.close();
  return { leaverRun };
}
