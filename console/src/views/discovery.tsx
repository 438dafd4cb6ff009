import { useState } from 'preact/hooks';
import { get, post } from '../api.js';
import { go, href } from '../route.js';
import { useCan, useSession } from '../session.js';
import { Time } from '../time.js';
import { type DiscoveryRun, type Page, PROTOCOL_NAMES } from '../types.js';
import { Alert, Loading, Section, StateBadge, useLoad, TableWrap } from '../ui.js';

/** A run's status as a person says it: a failed run that someone cancelled was cancelled. */
export const runStatus = (r: DiscoveryRun): string => (r.cancelledBy ? 'cancelled' : r.status);

export function RunsTable({ runs, caption }: { runs: DiscoveryRun[]; caption: string }) {
  return (
    <TableWrap label={caption}>
      <table>
        <thead>
          <tr>
            <th scope="col">Run</th>
            <th scope="col">Protocol</th>
            <th scope="col">Status</th>
            <th scope="col">Progress</th>
            <th scope="col">Found</th>
            <th scope="col">Started by</th>
            <th scope="col">Requested</th>
          </tr>
        </thead>
        <tbody>
          {runs.map((r) => (
            <tr key={r.id}>
              <td>
                <a href={href('discovery', String(r.id))}>Run {r.id}</a>
              </td>
              <td>{PROTOCOL_NAMES[r.protocol] ?? r.protocol}</td>
              <td>
                <StateBadge state={runStatus(r)} />
              </td>
              <td>{r.targetsTotal > 0 ? `${r.targetsDone} of ${r.targetsTotal}` : '—'}</td>
              <td>
                {r.found}
                {r.errors > 0 && <span class="warn"> ({r.errors} errors)</span>}
              </td>
              <td>{r.trigger === 'technician' ? r.actor : r.trigger === 'start' ? 'agent start' : 'schedule'}</td>
              <td>
                <Time at={r.requestedAt} short />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </TableWrap>
  );
}

/** Discovery: start a run (protocols; OPC UA targets inside the allowed ranges), and the runs so far. */
export function Discovery() {
  const can = useCan();
  const runs = useLoad(() => get<Page<DiscoveryRun>>('/api/v1/discovery/runs?limit=50'), 'runs', 10_000);
  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>Discovery</h1>
      </div>
      {can('discovery.run') && <StartRun />}
      <Section
        title="Runs"
        actions={
          <button type="button" class="small" onClick={runs.reload} disabled={runs.loading}>
            Refresh
          </button>
        }
      >
        <Alert error={runs.error} />
        {!runs.data ? (
          !runs.error && <Loading />
        ) : runs.data.items.length === 0 ? (
          <p class="muted">No discovery run yet.</p>
        ) : (
          <RunsTable runs={runs.data.items} caption="Discovery runs" />
        )}
      </Section>
    </>
  );
}

const ANYWHERE =
  'OPC UA only, optional: endpoint URLs and IPv4 ranges, separated by commas or new lines, inside the ranges the gateway may scan. ' +
  'Empty: what the configuration names.';

function StartRun() {
  const { principal } = useSession();
  // A user scoped to part of the plant discovers OPC UA in their ranges only (MQTT discovery covers the whole plant).
  const scoped = principal.scope !== undefined;
  const yours = (principal.ranges ?? []).join(', ') || 'none given';
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const start = async (e: Event) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    const protocols = (['mqtt', 'opcua'] as const).filter((p) => form.get(p) === 'on');
    const targets = String(form.get('targets') ?? '')
      .split(/[\s,]+/)
      .filter(Boolean);
    if (protocols.length === 0) return setError('Choose MQTT, OPC UA or both.');
    if (targets.length > 0 && !protocols.includes('opcua')) return setError('Targets are for OPC UA: tick OPC UA, or clear Targets.');
    setBusy(true);
    setError(undefined);
    try {
      // Both ticked: every protocol the configuration has on (a protocol switched off would refuse the whole request).
      const body = { ...(protocols.length === 1 ? { protocols } : {}), ...(targets.length > 0 ? { targets } : {}) };
      const { runs } = await post<{ runs: DiscoveryRun[] }>('/api/v1/discovery/runs', body);
      const [first, ...others] = runs;
      if (first) go(href('discovery', String(first.id), { also: others.map((r) => r.id).join(',') || undefined }));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Section title="Start a run">
      <form onSubmit={start} class="start-run">
        <fieldset>
          <legend>Protocols</legend>
          <label class="check">
            <input type="checkbox" name="mqtt" defaultChecked={!scoped} /> MQTT
          </label>
          <label class="check">
            <input type="checkbox" name="opcua" defaultChecked /> OPC UA
          </label>
        </fieldset>
        <label>
          Targets
          <textarea name="targets" rows={2} spellcheck={false} placeholder="opc.tcp://10.0.4.20:4840, 10.0.4.0/24" aria-describedby="targets-hint" />
        </label>
        <p class="hint" id="targets-hint">
          {scoped ? `OPC UA endpoint URLs and IPv4 ranges inside your ranges (${yours}), separated by commas or new lines.` : ANYWHERE}
        </p>
        <Alert error={error} />
        <button type="submit" class="primary self-start" disabled={busy}>
          Start run
        </button>
      </form>
    </Section>
  );
}
