import { useState } from 'preact/hooks';
import { get, post } from '../api.js';
import { QrCode } from '../qr.js';
import { Time } from '../time.js';
import type { Page } from '../types.js';
import { Alert, CopyButton, Facts, Loading, Section, useLoad, TableWrap } from '../ui.js';

interface OnboardingInfo {
  brokers: { url: string; purpose?: string }[];
  /** SHA-256 of each root of the gateway's CA (an EC and an RSA one), AA:BB:… as openssl prints it. */
  caFingerprints: string[];
  caChainUrl: string;
}

interface TokenRecord {
  id: string;
  label: string;
  maxUses: number;
  uses: number;
  expiresAt: string;
  createdAt: string;
  revokedAt?: string;
}

/**
 * What a device or commissioning app scans: the enrollment token with where to connect and which CA to trust.
 * `caFingerprint` is the first root's; `caFingerprints` every root the gateway has (its EC and RSA issuers).
 */
export const enrollmentContent = (token: string, info: OnboardingInfo): string =>
  JSON.stringify({
    type: 'edge-agent-enrollment',
    v: 1,
    token,
    brokers: info.brokers.map((b) => b.url),
    caFingerprint: info.caFingerprints[0] ?? '',
    caFingerprints: info.caFingerprints,
  });

/**
 * Onboarding helpers: an enrollment token made here is shown once, with the
 * broker URLs and the CA fingerprint a device needs, and as a QR code a
 * commissioning app scans.
 */
export function Onboarding() {
  const info = useLoad(() => get<OnboardingInfo>('/api/v1/onboarding'), 'onboarding');
  const tokens = useLoad(() => get<Page<TokenRecord>>('/api/v1/enrollment-tokens?limit=1000'), 'tokens');
  const [made, setMade] = useState<{ token: string; record: TokenRecord }>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);

  const create = async (e: Event) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    const label = String(form.get('label') ?? '').trim();
    const uses = Number(form.get('uses') || 1);
    const hours = Number(form.get('hours') || 24);
    setBusy(true);
    setError(undefined);
    try {
      setMade(await post('/api/v1/enrollment-tokens', { ...(label ? { label } : {}), uses, expiresInSeconds: Math.round(hours * 3600) }));
      tokens.reload();
      (e.target as HTMLFormElement).reset();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>Onboarding</h1>
      </div>
      <p class="lead">
        An MQTT device with an enrollment token gets its certificate without waiting for a technician. Give it the token, the broker URL and the CA fingerprint,
        or let a commissioning app scan the QR code.
      </p>
      <Section title="New enrollment token">
        <form onSubmit={create} class="inline-form">
          <label>
            Label
            <input name="label" maxLength={128} placeholder="enrollment token" autocomplete="off" />
          </label>
          <label class="short">
            Uses
            <input name="uses" type="number" min={1} max={1000000} step={1} defaultValue="1" required />
          </label>
          <label class="short">
            Valid for (hours)
            <input name="hours" type="number" min={1} max={8784} step={1} defaultValue="24" required />
          </label>
          <button type="submit" class="primary" disabled={busy}>
            Create token
          </button>
        </form>
        <Alert error={error} />
      </Section>
      {made && <NewToken made={made} info={info.data} infoError={info.error} onDismiss={() => setMade(undefined)} />}
      <Section title="Gateway">
        <Alert error={info.error} />
        {info.data ? <GatewayFacts info={info.data} /> : !info.error && <Loading />}
      </Section>
      <Section title="Enrollment tokens">
        <Alert error={tokens.error} />
        {tokens.data ? <TokenTable items={tokens.data.items} onChanged={tokens.reload} /> : !tokens.error && <Loading />}
      </Section>
    </>
  );
}

function GatewayFacts({ info }: { info: OnboardingInfo }) {
  return (
    <Facts
      rows={[
        [
          'Broker',
          <ul key="b" class="plain">
            {info.brokers.map((b) => (
              <li key={b.url}>
                <code>{b.url}</code>
                {b.purpose && <span class="muted"> ({b.purpose})</span>}
              </li>
            ))}
          </ul>,
        ],
        [
          info.caFingerprints.length === 1 ? 'CA fingerprint (SHA-256)' : 'CA fingerprints (SHA-256)',
          <ul key="f" class="plain">
            {info.caFingerprints.map((f) => (
              <li key={f}>
                <code class="wrap-all">{f}</code>
              </li>
            ))}
          </ul>,
        ],
        [
          'CA chain',
          <a key="c" href={info.caChainUrl} download="ca-chain.pem">
            Download the CA chain
          </a>,
        ],
      ]}
    />
  );
}

function NewToken({
  made,
  info,
  infoError,
  onDismiss,
}: {
  made: { token: string; record: TokenRecord };
  info: OnboardingInfo | undefined;
  infoError: unknown;
  onDismiss: () => void;
}) {
  return (
    <Section title="Your new token" id="new-token">
      <p class="note" role="status">
        Shown this once: the gateway keeps only its hash. Copy it or scan the QR code now.
      </p>
      <div class="token-out">
        <div>
          <Facts
            rows={[
              [
                'Token',
                <code key="t" class="wrap-all secret">
                  {made.token}
                </code>,
              ],
              ['Label', made.record.label],
              ['Uses', String(made.record.maxUses)],
              ['Expires', <Time key="e" at={made.record.expiresAt} />],
            ]}
          />
          <div class="buttons">
            <CopyButton text={made.token} label="Copy token" />
            <button type="button" class="small" onClick={onDismiss}>
              Done, hide it
            </button>
          </div>
          {info && <GatewayFacts info={info} />}
        </div>
        {info ? (
          <QrCode text={enrollmentContent(made.token, info)} label="Enrollment QR code" size={256} />
        ) : (
          <Alert error={infoError ?? 'The QR code needs the broker URL and CA fingerprint, which could not be read.'} />
        )}
      </div>
    </Section>
  );
}

function TokenTable({ items, onChanged }: { items: TokenRecord[]; onChanged: () => void }) {
  const [error, setError] = useState<unknown>();
  if (items.length === 0) return <p class="muted">No enrollment token yet.</p>;
  const revoke = (t: TokenRecord) =>
    post(`/api/v1/enrollment-tokens/${encodeURIComponent(t.id)}/revoke`).then(
      () => (setError(undefined), onChanged()),
      (err: unknown) => setError(err),
    );
  const now = Date.now();
  return (
    <>
      <Alert error={error} />
      <TableWrap label="Enrollment tokens">
        <table>
          <thead>
            <tr>
              <th scope="col">Label</th>
              <th scope="col">Used</th>
              <th scope="col">Expires</th>
              <th scope="col">State</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {[...items].reverse().map((t) => {
              const state = t.revokedAt ? 'revoked' : new Date(t.expiresAt).getTime() < now ? 'expired' : t.uses >= t.maxUses ? 'used up' : 'usable';
              return (
                <tr key={t.id}>
                  <td>
                    {t.label} <span class="muted mono">{t.id}</span>
                  </td>
                  <td>
                    {t.uses} of {t.maxUses}
                  </td>
                  <td>
                    <Time at={t.expiresAt} short />
                  </td>
                  <td>{state}</td>
                  <td>
                    {state === 'usable' && (
                      <button type="button" class="small danger" onClick={() => revoke(t)} aria-label={`Revoke enrollment token ${t.id}`}>
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </TableWrap>
    </>
  );
}
