import { useState } from 'preact/hooks';
import { api, get } from '../api.js';
import { href } from '../route.js';
import { useCan } from '../session.js';
import { Time } from '../time.js';
import { type Device, type DeviceDetails, LOCATION_FIELDS, PROTOCOL_NAMES } from '../types.js';
import { Alert, Facts, Loading, Section, StateBadge, useLoad } from '../ui.js';
import { type Decision, DECISION_PERMISSION, DecisionDialog, type Outcome, OutcomeNote } from './decide.js';
import { Certificates, History, PushSteps, SyncState } from './deviceSections.js';

/** Which decisions make sense for a device now (the API still decides; a button that can only fail is not shown). */
function decisionsFor(details: DeviceDetails): Decision[] {
  const { device, pendingRequests } = details;
  if (device.state === 'decommissioned') return [];
  const waiting = pendingRequests.length > 0;
  const out: Decision[] = [];
  if (device.state !== 'provisioned' || waiting) out.push('approve');
  if (device.state === 'pending' || device.state === 'discovered' || waiting) out.push('reject');
  if (device.state === 'provisioned') out.push('revoke');
  out.push('decommission');
  return out;
}

const LABELS: Record<Decision, string> = { approve: 'Approve', reject: 'Reject', revoke: 'Revoke', decommission: 'Decommission' };

/** One device: what it is, where it is, its certificates, its OPC UA push, its history and sync, and the decisions on it. */
export function DevicePage({ id }: { id: string }) {
  const can = useCan();
  const path = `/api/v1/devices/${encodeURIComponent(id)}`;
  const { data, error, reload } = useLoad(() => get<DeviceDetails>(path), path, 10_000);
  const [deciding, setDeciding] = useState<Decision | undefined>();
  const [outcome, setOutcome] = useState<{ kind: Decision; outcomes: Outcome[] } | undefined>();
  // The answer for this device (a page moved to another device shows nothing of the last one).
  const details = data?.device.id === id ? data : undefined;
  const device = details?.device;
  const decisions = details ? decisionsFor(details).filter((k) => can(DECISION_PERMISSION[k])) : [];

  return (
    <>
      <p class="crumbs">
        <a href="#/devices">Devices</a> /
      </p>
      {/* The heading comes with the page's parts, so that whoever waits for it finds them all (the form of "Location and asset tag"). */}
      <div class="page-head">
        {(device || error) && (
          <h1 tabIndex={-1} class="mono">
            {id}
          </h1>
        )}
        {device && <StateBadge state={device.state} />}
        {device && (
          <a class="button small" href={href('devices', id, 'label')}>
            Print asset label
          </a>
        )}
      </div>
      <Alert error={error} />
      {outcome && <OutcomeNote kind={outcome.kind} outcomes={outcome.outcomes} />}
      {!details || !device ? (
        !error && <Loading />
      ) : (
        <>
          {device.reason && <p class="note">{device.reason}</p>}
          {decisions.length > 0 && (
            <div class="buttons decisions">
              {decisions.map((k) => (
                <button key={k} type="button" class={k === 'approve' ? 'primary' : 'danger'} onClick={() => setDeciding(k)}>
                  {LABELS[k]}
                </button>
              ))}
            </div>
          )}
          <div class="grid">
            <Section title="Nameplate">
              <Nameplate device={device} />
              {details.pendingRequests.length > 0 && (
                <p class="note">
                  {details.pendingRequests.length} enrollment request{details.pendingRequests.length === 1 ? '' : 's'} waiting for a technician, the latest{' '}
                  <Time at={details.pendingRequests[details.pendingRequests.length - 1]!.receivedAt} />.
                </p>
              )}
            </Section>
            <Section title="Location and asset tag">
              <Annotation device={device} editable={can('devices.annotate')} onSaved={reload} />
            </Section>
          </div>
          <Section title="Certificates">
            <Certificates device={device} push={details.push} />
          </Section>
          <Section title="OPC UA push">
            <PushSteps device={device} push={details.push} />
          </Section>
          <Section title="History">
            <History events={details.history} />
          </Section>
          <Section title="Sync">
            <SyncState device={device} sync={details.sync} />
          </Section>
        </>
      )}
      {deciding && (
        <DecisionDialog
          kind={deciding}
          ids={[id]}
          onClose={() => setDeciding(undefined)}
          onDone={(outcomes) => {
            setDeciding(undefined);
            setOutcome({ kind: deciding, outcomes });
            reload();
          }}
        />
      )}
    </>
  );
}

function Nameplate({ device }: { device: Device }) {
  const n = device.nameplate;
  return (
    <Facts
      rows={[
        ['Name', device.name],
        ['Display name', n.displayName],
        ['Protocol', PROTOCOL_NAMES[device.protocol]],
        ['Manufacturer', n.manufacturer],
        ['Model', n.model],
        ['Serial number', n.serialNumber ?? n.serial],
        ['Hardware revision', n.hardwareRevision],
        ['Firmware', n.firmwareVersion ?? n.firmware],
        ['Online', device.online ? 'yes' : 'no'],
        ['First seen', <Time key="f" at={device.firstSeen} />],
        ['Last seen', <Time key="l" at={device.lastSeen} />],
        ['Blocked', device.blocked ? 'yes: its requests wait for a technician' : undefined],
        ['Pre-approved', device.preapproved ? 'yes: its next request is approved' : undefined],
      ]}
    />
  );
}

/** The asset tag and location form: an empty field clears its value; the change is audited and sent upstream. */
function Annotation({ device, editable, onSaved }: { device: Device; editable: boolean; onSaved: () => void }) {
  const [error, setError] = useState<unknown>();
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);
  const loc = device.location ?? {};
  if (!editable || device.state === 'decommissioned')
    return <Facts rows={[['Asset tag', device.assetTag], ...LOCATION_FIELDS.map((f): [string, string | undefined] => [cap(f), loc[f]])]} />;

  const save = async (e: Event) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    const value = (f: string) => {
      const v = String(form.get(f) ?? '').trim();
      return v === '' ? null : v;
    };
    setBusy(true);
    setError(undefined);
    setSaved(false);
    try {
      await api('PUT', `/api/v1/devices/${encodeURIComponent(device.id)}/annotation`, {
        assetTag: value('assetTag'),
        location: Object.fromEntries(LOCATION_FIELDS.map((f) => [f, value(f)])),
      });
      setSaved(true);
      onSaved();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form onSubmit={save} class="annotation" key={device.revision}>
      <label>
        Asset tag
        <input name="assetTag" defaultValue={device.assetTag ?? ''} maxLength={128} autocomplete="off" />
      </label>
      {LOCATION_FIELDS.map((f) => (
        <label key={f}>
          {cap(f)}
          <input name={f} defaultValue={loc[f] ?? ''} maxLength={128} autocomplete="off" />
        </label>
      ))}
      <Alert error={error} />
      <div class="buttons">
        <button type="submit" class="primary" disabled={busy}>
          Save
        </button>
        {saved && <span role="status">Saved.</span>}
      </div>
    </form>
  );
}

const cap = (s: string) => s[0]!.toUpperCase() + s.slice(1);
