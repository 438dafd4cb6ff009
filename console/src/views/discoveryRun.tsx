import { useEffect, useState } from 'preact/hooks';
import { get, post } from '../api.js';
import { href, useRoute } from '../route.js';
import { useCan } from '../session.js';
import { Time } from '../time.js';
import { type DiscoveryRun, type DiscoveryTarget, type Progress, PROTOCOL_NAMES } from '../types.js';
import { Alert, Facts, Loading, Section, StateBadge, TableWrap } from '../ui.js';
import { runStatus } from './discovery.js';

const ended = (r: DiscoveryRun) => r.status === 'done' || r.status === 'failed';

const PHASES: Record<string, string> = {
  requested: 'Waiting to start',
  running: 'Running',
  listing: 'Listing what to look at',
  scanning: 'Scanning addresses',
  probing: 'Probing what answered',
  done: 'Done',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

/**
 * One discovery run, live: the run's Server-Sent Events (`run`, `progress`,
 * `end`) update the progress while it runs; at its end the targets and the
 * devices found are shown.
 */
export function DiscoveryRunPage({ id }: { id: string }) {
  const can = useCan();
  const also = (useRoute().params.get('also') ?? '').split(',').filter(Boolean);
  const [run, setRun] = useState<DiscoveryRun>();
  const [targets, setTargets] = useState<DiscoveryTarget[]>([]);
  const [progress, setProgress] = useState<Progress>();
  const [error, setError] = useState<unknown>();
  const [note, setNote] = useState<string>();
  const [cancelling, setCancelling] = useState(false);

  useEffect(() => {
    let source: EventSource | undefined;
    let gone = false;
    setRun(undefined);
    setProgress(undefined);
    setError(undefined);
    const path = `/api/v1/discovery/runs/${encodeURIComponent(id)}`;
    get<{ run: DiscoveryRun; targets: DiscoveryTarget[] }>(path).then(
      (body) => {
        if (gone) return;
        setRun(body.run);
        setTargets(body.targets);
        if (ended(body.run)) return;
        source = new EventSource(path + '/events');
        source.addEventListener('run', (e) => setRun(JSON.parse((e as MessageEvent).data) as DiscoveryRun));
        source.addEventListener('progress', (e) => setProgress(JSON.parse((e as MessageEvent).data) as Progress));
        source.addEventListener('end', (e) => {
          const end = JSON.parse((e as MessageEvent).data) as { run: DiscoveryRun; targets: DiscoveryTarget[] };
          source?.close();
          setRun(end.run);
          setTargets(end.targets);
        });
        source.addEventListener('revoked', (e) => {
          source?.close();
          setNote(`Live progress stopped: ${(JSON.parse((e as MessageEvent).data) as { reason: string }).reason}`);
        });
        source.onerror = () => {
          // The browser reconnects by itself while the stream can be opened again; closed means refused (the session ended?).
          if (source?.readyState === EventSource.CLOSED) {
            setNote('Live progress stopped. Reload the page to follow the run again.');
            get(path).catch(() => {});
          }
        };
      },
      (err: unknown) => !gone && setError(err),
    );
    return () => {
      gone = true;
      source?.close();
    };
  }, [id]);

  const cancel = async () => {
    setCancelling(true);
    try {
      const body = await post<{ run: DiscoveryRun }>(`/api/v1/discovery/runs/${encodeURIComponent(id)}/cancel`);
      setRun((r) => (r && !ended(r) ? body.run : r));
    } catch (err) {
      setError(err);
    } finally {
      setCancelling(false);
    }
  };

  const found = targets.filter((t) => t.status === 'found');
  const total = progress?.total ?? run?.targetsTotal ?? 0;
  const done = progress?.done ?? run?.targetsDone ?? 0;
  const phase = run && ended(run) ? runStatus(run) : (progress?.phase ?? run?.status ?? '');
  return (
    <>
      <p class="crumbs">
        <a href="#/discovery">Discovery</a> /
      </p>
      <div class="page-head">
        <h1 tabIndex={-1}>Run {id}</h1>
        {run && <StateBadge state={runStatus(run)} />}
        {run && !ended(run) && can('discovery.run') && (
          <button type="button" class="danger small" onClick={cancel} disabled={cancelling}>
            Cancel run
          </button>
        )}
      </div>
      {also.length > 0 && (
        <p class="note">
          Also started:{' '}
          {also.map((r, i) => (
            <span key={r}>
              {i > 0 && ', '}
              <a href={href('discovery', r)}>run {r}</a>
            </span>
          ))}
          .
        </p>
      )}
      <Alert error={error} />
      {!run ? (
        !error && <Loading />
      ) : (
        <>
          <Section title="Progress">
            <div role="status" aria-live="polite" class="progress">
              <p>
                <strong>{PHASES[phase] ?? phase}</strong>
                {total > 0 && ` — ${done} of ${total} targets`}, {progress?.found ?? run.found} found, {progress?.errors ?? run.errors} errors
                {progress?.scanned && ` (${progress.scanned.done} of ${progress.scanned.total} addresses scanned)`}
              </p>
              {!ended(run) && <progress max={total || 1} value={total ? done : undefined} aria-label="Run progress" />}
            </div>
            {note && <p class="note">{note}</p>}
            <Facts
              rows={[
                ['Protocol', PROTOCOL_NAMES[run.protocol]],
                ['Started by', run.trigger === 'technician' ? run.actor : run.trigger],
                ['Targets asked', run.request?.targets.join(', ')],
                ['Requested', <Time key="r" at={run.requestedAt} />],
                ['Started', run.startedAt ? <Time key="s" at={run.startedAt} /> : undefined],
                ['Finished', run.finishedAt ? <Time key="f" at={run.finishedAt} /> : undefined],
                ['Cancelled by', run.cancelledBy],
                ['Error', run.error],
              ]}
            />
          </Section>
          <Section title="Found devices">
            {found.length === 0 ? (
              <p class="muted">{ended(run) ? 'Nothing found.' : 'Nothing yet.'}</p>
            ) : (
              <ul class="found">
                {found.map((t) => (
                  <li key={t.target + (t.deviceId ?? '')}>
                    {t.deviceId ? <a href={href('devices', t.deviceId)}>{t.deviceId}</a> : <span>{t.target}</span>}{' '}
                    <span class="muted">
                      at {t.target} ({t.source})
                    </span>
                  </li>
                ))}
              </ul>
            )}
          </Section>
          {targets.length > 0 && (
            <Section title="Targets">
              <Targets targets={targets} />
            </Section>
          )}
        </>
      )}
    </>
  );
}

/** The targets that said something (found, error, skipped); the many that answered nothing on request. */
function Targets({ targets }: { targets: DiscoveryTarget[] }) {
  const [all, setAll] = useState(false);
  const quiet = targets.filter((t) => t.status === 'nothing').length;
  const shown = all ? targets : targets.filter((t) => t.status !== 'nothing');
  return (
    <>
      {quiet > 0 && (
        <p>
          {quiet} of {targets.length} target{targets.length === 1 ? '' : 's'} answered nothing.{' '}
          <button type="button" class="small" onClick={() => setAll(!all)} aria-pressed={all}>
            {all ? 'Hide those' : 'Show every target'}
          </button>
        </p>
      )}
      {shown.length > 0 && <TargetTable targets={shown} />}
    </>
  );
}

function TargetTable({ targets }: { targets: DiscoveryTarget[] }) {
  return (
    <TableWrap label="Targets of the run">
      <table>
        <thead>
          <tr>
            <th scope="col">Target</th>
            <th scope="col">Source</th>
            <th scope="col">Outcome</th>
            <th scope="col">Detail</th>
            <th scope="col">When</th>
          </tr>
        </thead>
        <tbody>
          {targets.map((t, i) => (
            <tr key={t.target + i}>
              <td class="mono">{t.target}</td>
              <td>{t.source}</td>
              <td>
                <StateBadge state={t.status} />
              </td>
              <td class="wrap">{t.detail}</td>
              <td>
                <Time at={t.at} short />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </TableWrap>
  );
}
