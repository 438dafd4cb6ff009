import { get } from '../api.js';
import { href } from '../route.js';
import { useCan } from '../session.js';
import { Time } from '../time.js';
import { DEVICE_STATES, type Overview as OverviewData, PROTOCOL_NAMES, type Protocol, type SyncStatus } from '../types.js';
import { Alert, count, Facts, Loading, Section, useLoad } from '../ui.js';
import { RunsTable } from './discovery.js';

const STATE_LABELS: Record<string, string> = {
  pending: 'pending approval',
  discovered: 'discovered',
  provisioned: 'provisioned',
  rejected: 'rejected',
  revoked: 'revoked',
  decommissioned: 'decommissioned',
};

/** The gateway at a glance: devices by state (pending approvals first), alarms, discovery, sync, expiring certificates. */
export function Overview() {
  const { data, error, reload, loading } = useLoadOverview();
  const can = useCan();
  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>Overview</h1>
        <button type="button" class="small" onClick={reload} disabled={loading}>
          Refresh
        </button>
      </div>
      <Alert error={error} />
      {!data ? (
        !error && <Loading />
      ) : (
        <>
          {data.alarms.length > 0 && (
            <Section title="Alarms">
              <ul class="alarms">
                {data.alarms.map((a) => (
                  <li key={a.code + a.message} class={`alarm ${a.severity}`}>
                    <span class="badge">{a.severity}</span> {a.link ? <a href={a.link}>{a.message}</a> : a.message}
                  </li>
                ))}
              </ul>
            </Section>
          )}
          <Section title="Devices">
            <ul class="tiles">
              {DEVICE_STATES.map((s) => (
                <li key={s} class={s === 'pending' && (data.devices.byState[s] ?? 0) > 0 ? 'tile attention' : 'tile'}>
                  <a class="tile-link" href={href('devices', { state: s })}>
                    <span class="tile-count">{count(data.devices.byState[s] ?? 0)}</span> <span class="tile-what">{STATE_LABELS[s]}</span>
                  </a>
                </li>
              ))}
            </ul>
            <p class="summary">
              <a href="#/devices">{count(data.devices.total)} devices in all</a>, {count(data.devices.online)} online;{' '}
              {(Object.keys(PROTOCOL_NAMES) as Protocol[]).map((p, i) => (
                <span key={p}>
                  {i > 0 && ', '}
                  <a href={href('devices', { protocol: p })}>
                    {count(data.devices.byProtocol[p] ?? 0)} {PROTOCOL_NAMES[p]}
                  </a>
                </span>
              ))}
              .
            </p>
          </Section>
          {data.certificates && (
            <Section title="Certificates">
              <p>
                {data.certificates.valid !== undefined && `${data.certificates.valid} valid certificate${data.certificates.valid === 1 ? '' : 's'}; `}
                <strong>{data.certificates.expiringSoon}</strong> expire{data.certificates.expiringSoon === 1 ? 's' : ''} before{' '}
                <Time at={data.certificates.before} />.
                {data.certificates.expiringSoon > 0 && ' The agent renews device certificates it issued; an OPC UA push renews a server’s.'}
              </p>
            </Section>
          )}
          {data.sync && (
            <Section title="Sync">
              <SyncFacts sync={data.sync} />
            </Section>
          )}
          {can('discovery.read') && (
            <Section title="Discovery" actions={<a href="#/discovery">All runs</a>}>
              <p>
                {data.runs.active} run{data.runs.active === 1 ? '' : 's'} active.
              </p>
              {data.runs.recent.length > 0 && <RunsTable runs={data.runs.recent} caption="Recent discovery runs" />}
            </Section>
          )}
        </>
      )}
    </>
  );
}

function useLoadOverview() {
  return useLoad(() => get<OverviewData>('/api/v1/overview'), 'overview', 10_000);
}

/** The upstream sync's health, as /api/v1/overview and /api/v1/sync/status give it. */
export function SyncFacts({ sync }: { sync: SyncStatus }) {
  if (!sync.enabled) return <p class="muted">Sync to the plant CMMS is off (sync.enabled: false).</p>;
  const last = sync.lastSuccessAt ?? sync.lastSuccess;
  return (
    <Facts
      rows={[
        ['Connected', sync.connected === undefined ? undefined : sync.connected ? 'yes' : 'no'],
        ['Backlog', `${sync.backlog} change${sync.backlog === 1 ? '' : 's'} waiting`],
        ['Dead letters', sync.deadLetters > 0 ? <strong class="warn">{sync.deadLetters} refused by the receiver</strong> : '0'],
        ['Stuck', sync.stuck ? <strong class="warn">batches not accepted for too long</strong> : undefined],
        ['Last success', last ? <Time at={last} /> : 'never'],
        ['Last error', sync.lastError],
        ['Paused', sync.paused],
      ]}
    />
  );
}
