import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { ApiFailure, api, message, onUnauthorized, setCsrfToken } from './api.js';
import { type Route, useRoute } from './route.js';
import { SessionContext } from './session.js';
import type { ConsoleSession } from './types.js';
import { Alert } from './ui.js';
import { Admin } from './views/admin.js';
import { DevicePage } from './views/device.js';
import { Devices } from './views/devices.js';
import { Discovery } from './views/discovery.js';
import { DiscoveryRunPage } from './views/discoveryRun.js';
import { AssetLabel } from './views/label.js';
import { Onboarding } from './views/onboarding.js';
import { Overview } from './views/overview.js';
import { SignIn } from './views/signIn.js';

const NAV: [string, string, string | undefined][] = [
  ['Overview', '#/', undefined],
  ['Devices', '#/devices', 'devices.read'],
  ['Discovery', '#/discovery', 'discovery.read'],
  ['Onboarding', '#/onboarding', 'devices.enroll'],
  ['Administration', '#/admin', 'users.manage'],
];

const ROLE_NAMES: Record<string, string> = { admin: 'administrator', technician: 'technician', viewer: 'viewer', contractor: 'contractor' };

export function App() {
  // undefined: asking the gateway who we are; null: signed out.
  const [session, setSession] = useState<ConsoleSession | null | undefined>(undefined);
  const [notice, setNotice] = useState<string | undefined>();
  // Whether a session was shown: a 401 then means it ended (said on the sign-in view), not that there was none.
  const signedInRef = useRef(false);
  // Whether the session began with the sign-in form on this page (not with the cookie at load).
  const signedInHere = useRef(false);

  // A layout effect: the probe leaves at the first render, not a frame later (Preact runs useEffect after the next paint).
  useLayoutEffect(() => {
    onUnauthorized(() => {
      setCsrfToken('');
      if (signedInRef.current) setNotice('Your session has ended (signed out, expired or revoked): sign in again.');
      signedInRef.current = false;
      setSession(null);
    });
    api<ConsoleSession>('GET', '/api/v1/console/session', undefined, { signIn: true }).then(
      (s) => signedIn(s, false),
      (err: unknown) => {
        if (!(err instanceof ApiFailure && err.status === 401)) setNotice(message(err));
        setSession(null);
      },
    );
  }, []);

  const signedIn = (s: ConsoleSession, here = true) => {
    signedInRef.current = true;
    signedInHere.current = here;
    setCsrfToken(s.csrfToken, `${s.principal.source}:${s.principal.name}`);
    setNotice(undefined);
    setSession(s);
  };

  if (session === undefined) return <p class="muted loading">Loading…</p>;
  if (session === null) return <SignIn onSignedIn={signedIn} notice={notice} />;
  return (
    <SessionContext.Provider value={session}>
      <Layout
        session={session}
        focusHeading={signedInHere.current}
        onSignedOut={() => {
          signedInRef.current = false;
          setCsrfToken('');
          setSession(null);
        }}
      />
    </SessionContext.Provider>
  );
}

function Layout({ session, onSignedOut, focusHeading }: { session: ConsoleSession; onSignedOut: () => void; focusHeading: boolean }) {
  const route = useRoute();
  const [error, setError] = useState<unknown>();
  const main = useRef<HTMLElement>(null);
  const path = route.segments.join('/');
  const first = useRef(true);
  const section = route.segments[0] ?? '';
  const permissions = session.permissions ?? [];

  // A new view: focus moves to its heading, as a page load would put it at the top (a search typed in the list keeps its focus).
  useEffect(() => {
    // The first view: after a sign-in (whose form is gone) the heading takes the focus; a page load leaves it alone.
    const firstView = first.current;
    first.current = false;
    if (firstView && !focusHeading) return;
    (main.current?.querySelector<HTMLElement>('h1') ?? main.current)?.focus();
    if (firstView) return;
    scrollTo(0, 0);
  }, [path]);
  useEffect(() => {
    document.title = `${titleOf(route.segments)} · Edge agent`;
  }, [path]);

  const signOut = async () => {
    try {
      await api('DELETE', '/api/v1/console/session');
    } catch (err) {
      if (!(err instanceof ApiFailure && err.status === 401)) return setError(err);
    }
    onSignedOut();
  };

  return (
    <div class="shell">
      <header class="top">
        <div class="top-row">
          <a class="brand" href="#/">
            Edge agent
          </a>
          <div class="who">
            <span class="who-id">
              <span class="who-name" title={session.principal.name}>
                {session.principal.name}
              </span>
              <span class="who-role">{ROLE_NAMES[session.principal.role] ?? session.principal.role}</span>
            </span>
            <button type="button" class="small" onClick={signOut}>
              Sign out
            </button>
          </div>
        </div>
        <nav aria-label="Main">
          <ul>
            {NAV.filter(([, , p]) => !p || permissions.includes(p)).map(([name, to]) => {
              const current = to === '#/' ? section === '' || section === 'overview' : to === `#/${section}`;
              return (
                <li key={to}>
                  <a href={to} aria-current={current ? 'page' : undefined}>
                    {name}
                  </a>
                </li>
              );
            })}
          </ul>
        </nav>
      </header>
      <Alert error={error} />
      <main id="main" ref={main} tabIndex={-1}>
        <View route={route} permissions={permissions} />
      </main>
    </div>
  );
}

const TITLES: Record<string, string> = { devices: 'Devices', discovery: 'Discovery', onboarding: 'Onboarding', admin: 'Administration' };

function titleOf([section, id, sub]: string[]): string {
  if (section === undefined || section === 'overview') return 'Overview';
  if (section === 'devices' && id) return sub === 'label' ? `Asset label ${id}` : id;
  if (section === 'discovery' && id) return `Run ${id}`;
  return TITLES[section] ?? 'Not found';
}

function Denied({ what }: { what: string }) {
  return (
    <>
      <h1 tabIndex={-1}>{what}</h1>
      <p class="alert" role="alert">
        Your role may not open this page. Ask an administrator if you need it.
      </p>
    </>
  );
}

function View({ route, permissions }: { route: Route; permissions: string[] }) {
  const [section, id, sub] = route.segments;
  const may = (p: string) => permissions.includes(p);
  switch (section) {
    case undefined:
    case 'overview':
      return <Overview />;
    case 'devices':
      if (id === undefined) return <Devices params={route.params} />;
      if (sub === 'label') return <AssetLabel id={id} />;
      return <DevicePage id={id} />;
    case 'discovery':
      if (!may('discovery.read')) return <Denied what="Discovery" />;
      return id === undefined ? <Discovery /> : <DiscoveryRunPage id={id} />;
    case 'onboarding':
      return may('devices.enroll') ? <Onboarding /> : <Denied what="Onboarding" />;
    case 'admin':
      return may('users.manage') ? <Admin params={route.params} /> : <Denied what="Administration" />;
    default:
      return (
        <>
          <h1 tabIndex={-1}>Not found</h1>
          <p>
            There is no page <code>{location.hash}</code>. <a href="#/">Go to the overview</a>.
          </p>
        </>
      );
  }
}
