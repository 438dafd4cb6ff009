import { useState } from 'preact/hooks';
import { ApiFailure, message, post } from '../api.js';
import { Alert, Dialog } from '../ui.js';

export type Decision = 'approve' | 'reject' | 'revoke' | 'decommission';

/** Which permission each decision needs (agent/api/deviceRoutes.ts). */
export const DECISION_PERMISSION: Record<Decision, string> = {
  approve: 'devices.decide',
  reject: 'devices.decide',
  revoke: 'devices.retire',
  decommission: 'devices.retire',
};

const WHAT: Record<Decision, string> = {
  approve: 'The device gets its certificate (an MQTT device at its next request; an OPC UA server by a push).',
  reject: 'Its requests are refused; later ones wait for a technician.',
  revoke: 'Its certificate is revoked (published in the CRL at once) and the device is cut off.',
  decommission: 'The device is retired for good: its certificate is revoked and its record becomes final.',
};

/** CRL reasons a revoke or decommission may carry (the CRL holds the reason; free text goes in the note). */
const CRL_REASONS = ['unspecified', 'keyCompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation'] as const;

const title = (kind: Decision) => kind[0]!.toUpperCase() + kind.slice(1);

/** How many requests go out at once when several devices are decided together. */
const PARALLEL = 6;

export interface Outcome {
  id: string;
  error?: string;
  /** Accepted but not carried out within the wait (202): the daemon does it shortly. */
  queued?: boolean;
}

/**
 * The dialog behind every decision button: a reason (and for a revoke or
 * decommission the CRL reason), then Confirm sends the decision for each
 * device and waits up to 10 s for the daemon to carry it out.
 */
export function DecisionDialog({ kind, ids, onClose, onDone }: { kind: Decision; ids: string[]; onClose: () => void; onDone: (o: Outcome[]) => void }) {
  const [busy, setBusy] = useState(false);
  const [progress, setProgress] = useState(0);
  const [error, setError] = useState<unknown>();
  const retires = kind === 'revoke' || kind === 'decommission';

  const confirm = async (e: Event) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    const reason = String(form.get('reason') ?? '').trim();
    const crl = String(form.get('crl') ?? '');
    const body = retires ? { ...(reason ? { note: reason } : {}), ...(crl ? { reason: crl } : {}), wait: 10 } : { ...(reason ? { reason } : {}), wait: 10 };
    setBusy(true);
    setError(undefined);
    const outcomes: Outcome[] = [];
    const queue = [...ids];
    let done = 0;
    const worker = async () => {
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
        try {
          const { action } = await post<{ action?: { doneAt?: string } }>(`/api/v1/devices/${encodeURIComponent(id)}/${kind}`, body);
          outcomes.push({ id, ...(action && !action.doneAt ? { queued: true } : {}) });
        } catch (err) {
          // A lost session ends the whole batch: the sign-in view takes over.
          if (err instanceof ApiFailure && err.status === 401) return;
          outcomes.push({ id, error: message(err) });
        }
        setProgress(++done);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, ids.length) }, worker));
    setBusy(false);
    const failed = outcomes.filter((o) => o.error);
    if (ids.length === 1 && failed.length === 1) return setError(failed[0]!.error);
    onDone(outcomes);
  };

  const many = ids.length > 1;
  return (
    <Dialog title={`${title(kind)} ${many ? `${ids.length} devices` : ids[0]}`} onClose={onClose}>
      <form onSubmit={confirm} class="stack">
        <p>{WHAT[kind]}</p>
        {many && (
          <details>
            <summary>The devices</summary>
            <ul class="id-list">
              {ids.map((id) => (
                <li key={id}>
                  <code>{id}</code>
                </li>
              ))}
            </ul>
          </details>
        )}
        <label>
          Reason
          <input
            name="reason"
            maxLength={500}
            autocomplete="off"
            placeholder={retires ? 'Free text, kept beside the CRL reason' : 'Why (kept in the history)'}
          />
        </label>
        {retires && (
          <label>
            CRL reason
            <select name="crl">
              <option value="">{kind === 'decommission' ? 'cessationOfOperation (default)' : 'unspecified (default)'}</option>
              {CRL_REASONS.map((r) => (
                <option key={r} value={r}>
                  {r}
                </option>
              ))}
            </select>
          </label>
        )}
        <Alert error={error} />
        {busy && many && (
          <p role="status">
            {progress} of {ids.length} done…
          </p>
        )}
        <div class="buttons">
          <button type="submit" class={retires || kind === 'reject' ? 'danger' : 'primary'} disabled={busy}>
            Confirm
          </button>
          <button type="button" onClick={onClose} disabled={busy}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}

/** What a batch of decisions came to, said once the dialog closes. */
export function OutcomeNote({ kind, outcomes }: { kind: Decision; outcomes: Outcome[] }) {
  const failed = outcomes.filter((o) => o.error);
  const queued = outcomes.filter((o) => o.queued).length;
  const verb = { approve: 'Approved', reject: 'Rejected', revoke: 'Revoked', decommission: 'Decommissioned' }[kind];
  return (
    <>
      <p role="status" class="note">
        {verb} {outcomes.length - failed.length} of {outcomes.length}.
        {queued > 0 && ` ${queued} still queued: the agent carries ${queued === 1 ? 'it' : 'them'} out shortly; refresh to see.`}
      </p>
      {failed.length > 0 && (
        <div role="alert" class="alert">
          <p>Not done:</p>
          <ul>
            {failed.map((o) => (
              <li key={o.id}>
                <code>{o.id}</code>: {o.error}
              </li>
            ))}
          </ul>
        </div>
      )}
    </>
  );
}
