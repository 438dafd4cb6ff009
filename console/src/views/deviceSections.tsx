import { useState } from 'preact/hooks';
import { get, message, query, request } from '../api.js';
import { useCan } from '../session.js';
import { Time } from '../time.js';
import type { Certificate, Device, DeviceEvent, DeviceSync, Page, PushJob, SyncStatus } from '../types.js';
import { Alert, download, Facts, Loading, StateBadge, useLoad, TableWrap } from '../ui.js';
import { SyncFacts } from './overview.js';

/** The steps of an OPC UA push, in order (agent/store/pushRepository.ts PUSH_STEPS). */
const PUSH_STEPS: [string, string][] = [
  ['connect', 'Connect to the server'],
  ['session', 'Open a session pinned to the approved certificate'],
  ['csr', 'Ask the server for a certificate request (CreateSigningRequest)'],
  ['check-csr', 'Check the request against the approved application'],
  ['issue', 'Issue the certificate'],
  ['update', 'Send it to the server (UpdateCertificate)'],
  ['trust', 'Write the CA chain and CRLs to its trust list'],
  ['apply', 'Apply the changes'],
  ['verify', 'Verify the server presents the new certificate'],
];

/** The PEM of one certificate followed by the CA chain (GET /ca/chain), as a file the browser saves. */
async function downloadPem(serial: string, name: string): Promise<void> {
  const [{ certificate }, chain] = await Promise.all([
    get<{ certificate: Certificate }>(`/api/v1/certificates/${encodeURIComponent(serial)}`),
    request('GET', '/ca/chain').then((r) => r.text()),
  ]);
  const pem = (certificate.pem ?? '').trim() + '\n' + chain.trim() + '\n';
  download(`${name.replace(/[^A-Za-z0-9._-]+/g, '_')}-${serial.slice(0, 16)}.pem`, pem);
}

export function Certificates({ device, push }: { device: Device; push: PushJob | undefined }) {
  const can = useCan();
  const identity = push?.applicationUri ?? device.name;
  const path = '/api/v1/certificates' + query({ identity, limit: 50 });
  const list = useLoad(() => (can('certificates.read') ? get<Page<Certificate>>(path) : Promise.resolve(undefined)), path + device.revision);
  const [error, setError] = useState<string>();
  if (!can('certificates.read'))
    return device.certificateSerial ? (
      <Facts rows={[['Current serial', <code key="s">{device.certificateSerial}</code>]]} />
    ) : (
      <p class="muted">No certificate issued.</p>
    );
  if (list.error) return <Alert error={list.error} />;
  if (!list.data) return <Loading />;
  const items = list.data.items;
  if (items.length === 0) return <p class="muted">No certificate issued to {identity}.</p>;
  const current = items.find((c) => c.serial === device.certificateSerial) ?? items.find((c) => c.status === 'valid');
  const save = (c: Certificate) => downloadPem(c.serial, device.name).catch((err: unknown) => setError(message(err)));
  return (
    <>
      <Alert error={error} />
      <TableWrap label="Certificates of the device">
        <table>
          <thead>
            <tr>
              <th scope="col">Serial</th>
              <th scope="col">Status</th>
              <th scope="col">Expires</th>
              <th scope="col">PEM with chain</th>
              <th scope="col">Subject</th>
              <th scope="col">Valid from</th>
            </tr>
          </thead>
          <tbody>
            {items.map((c) => (
              <tr key={c.serial}>
                <td class="mono" title={`SHA-256 ${c.thumbprint}`}>
                  {c.serial}
                </td>
                <td>
                  <StateBadge state={c.status} />
                  {c.revocationReason && <span class="muted"> ({c.revocationReason})</span>}
                </td>
                <td>
                  <Time at={c.notAfter} />
                </td>
                <td>
                  <button
                    type="button"
                    class="small"
                    onClick={() => save(c)}
                    aria-label={c === current ? undefined : `Download ${c.status} certificate ${c.serial}`}
                  >
                    {c === current ? 'Download PEM' : 'PEM'}
                  </button>
                </td>
                <td class="wrap">{c.subject}</td>
                <td>
                  <Time at={c.notBefore} short />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </TableWrap>
    </>
  );
}

export function PushSteps({ device, push }: { device: Device; push: PushJob | undefined }) {
  if (device.protocol !== 'opcua') return <p class="muted">An MQTT device asks for its own certificate: there is no push.</p>;
  if (!push) return <p class="muted">No push yet: the agent pushes a certificate to the server once it is approved.</p>;
  const at = PUSH_STEPS.findIndex(([s]) => s === push.step);
  const stateOf = (i: number): 'ok' | 'failed' | 'running' | 'todo' => {
    if (push.status === 'done') return 'ok';
    if (at < 0 || i > at) return 'todo';
    if (i < at) return 'ok';
    if (push.status === 'failed' || push.status === 'unsupported') return 'failed';
    return push.status === 'running' ? 'running' : 'todo';
  };
  const word = { ok: 'done', failed: 'failed', running: 'in progress', todo: 'not yet' };
  return (
    <>
      <Facts
        rows={[
          ['Status', <StateBadge key="s" state={push.status} />],
          ['Application URI', <code key="u">{push.applicationUri}</code>],
          ['Approved by', push.approvedBy],
          ['Attempts', String(push.attempts)],
          ['Next attempt', push.nextAttemptAt ? <Time key="n" at={push.nextAttemptAt} /> : undefined],
          ['Reason', push.reason],
          ['Certificate pushed', push.serial ? <code key="p">{push.serial}</code> : undefined],
          ['Certificate verified', push.appliedSerial ? <code key="a">{push.appliedSerial}</code> : undefined],
          ['CRLs delivered', push.crlDelivered === undefined ? undefined : push.crlDelivered ? 'yes' : 'no'],
          ['Updated', <Time key="t" at={push.updatedAt} />],
        ]}
      />
      <ol class="steps" aria-label="Push steps">
        {PUSH_STEPS.map(([step, what], i) => (
          <li key={step} class={`step ${stateOf(i)}`} aria-current={i === at && push.status !== 'done' ? 'step' : undefined}>
            <span class="step-name">{what}</span> <span class="step-state">{word[stateOf(i)]}</span>
          </li>
        ))}
      </ol>
    </>
  );
}

export function History({ events }: { events: DeviceEvent[] }) {
  if (events.length === 0) return <p class="muted">No events.</p>;
  const newest = [...events].reverse();
  return (
    <TableWrap label="History of the device">
      <table>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">State</th>
            <th scope="col">What</th>
            <th scope="col">Who</th>
          </tr>
        </thead>
        <tbody>
          {newest.map((e) => (
            <tr key={e.id}>
              <td>
                <Time at={e.at} />
              </td>
              <td>{e.from && e.from !== e.to ? `${e.from} → ${e.to}` : e.to}</td>
              <td class="wrap">{e.cause}</td>
              <td>{e.actor}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </TableWrap>
  );
}

function standing(sync: DeviceSync | undefined, revision: number) {
  switch (sync?.state) {
    case undefined:
      return undefined;
    case 'synced':
      return `synced: the CMMS has revision ${revision}`;
    case 'off':
      return 'sync to the plant CMMS is off (sync.enabled: false)';
    case 'waiting':
      return (
        <span>
          revision {sync.revision} {sync.sending ? 'is being sent' : 'waits to be sent'}, since <Time at={sync.since} />
        </span>
      );
    case 'refused':
      return (
        <strong class="warn">
          the receiver refused revision {sync.revision}
          {sync.status ? ` (HTTP ${sync.status})` : ''}: {sync.error}; since <Time at={sync.since} />
        </strong>
      );
  }
}

/** Where the device stands with the CMMS, and the sync's health for the whole gateway. */
export function SyncState({ device, sync }: { device: Device; sync: DeviceSync | undefined }) {
  const can = useCan();
  const status = useLoad(() => (can('sync.read') ? get<SyncStatus>('/api/v1/sync/status') : Promise.resolve(undefined)), 'sync' + device.revision);
  return (
    <>
      <Facts
        rows={[
          ['This device', standing(sync, device.revision)],
          ['Revision', `${device.revision} (each change raises it; the sync sends the latest)`],
          ['Changed', <Time key="u" at={device.updatedAt} />],
        ]}
      />
      <Alert error={status.error} />
      {status.data && sync?.state !== 'off' && (
        <>
          <h3>The gateway's sync</h3>
          <SyncFacts sync={status.data} />
        </>
      )}
    </>
  );
}
