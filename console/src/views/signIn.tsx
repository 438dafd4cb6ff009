import { useState } from 'preact/hooks';
import { api } from '../api.js';
import type { ConsoleSession } from '../types.js';
import { Alert } from '../ui.js';

/**
 * Sign in with a directory account, or with an API token (the first
 * administrator's is the content of <dataDir>/admin.token). Either way the
 * answer sets the console cookie and gives the CSRF token.
 */
export function SignIn({ onSignedIn, notice }: { onSignedIn: (s: ConsoleSession) => void; notice?: string }) {
  const [error, setError] = useState<unknown>(notice);
  const [busy, setBusy] = useState(false);

  const signIn = async (body: Record<string, string>) => {
    setBusy(true);
    setError(undefined);
    try {
      onSignedIn(await api<ConsoleSession>('POST', '/api/v1/console/session', body, { signIn: true }));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const submit = (e: Event, fields: string[]) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    // A password is sent as typed; a pasted name or token loses the spaces around it.
    signIn(Object.fromEntries(fields.map((f) => [f, f === 'password' ? String(form.get(f) ?? '') : String(form.get(f) ?? '').trim()])));
  };

  return (
    <main class="signin" id="main">
      <div class="signin-box">
        <p class="brand">Edge agent</p>
        <h1>Sign in</h1>
        <Alert error={error} />
        <form onSubmit={(e) => submit(e, ['username', 'password'])}>
          <h2>Directory account</h2>
          <label>
            User name
            <input name="username" autocomplete="username" required autocapitalize="none" spellcheck={false} />
          </label>
          <label>
            Password
            <input name="password" type="password" autocomplete="current-password" required />
          </label>
          <button type="submit" class="primary self-start" disabled={busy}>
            Sign in
          </button>
        </form>
        <form onSubmit={(e) => submit(e, ['token'])}>
          <h2>API token</h2>
          <p class="hint">
            An API token of a local user, such as the first administrator's in <code>admin.token</code> in the agent's data directory.
          </p>
          <label>
            API token
            <input name="token" type="password" autocomplete="off" required spellcheck={false} placeholder="eat_…" />
          </label>
          <button type="submit" class="self-start" disabled={busy}>
            Sign in with token
          </button>
        </form>
      </div>
    </main>
  );
}
