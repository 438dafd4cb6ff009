import { useEffect, useState } from 'preact/hooks';
import { get, post, query } from '../api.js';
import { go, href } from '../route.js';
import { useSession } from '../session.js';
import { Time } from '../time.js';
import type { ApiTokenRow, AuditEntry, Page, UserRow } from '../types.js';
import { Alert, CopyButton, Loading, Section, useLoad, TableWrap } from '../ui.js';

const AUDIT_PAGE = 50;

/** Administration (users.manage): users, API tokens, and the audit log filtered by actor (kept in the hash). */
export function Admin({ params }: { params: URLSearchParams }) {
  const users = useLoad(() => get<Page<UserRow>>('/api/v1/users?limit=1000'), 'users');
  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>Administration</h1>
      </div>
      <Section title="Users">
        <Users list={users.data?.items} error={users.error} onChanged={users.reload} />
      </Section>
      <Section title="API tokens">
        <Tokens users={users.data?.items ?? []} />
      </Section>
      <Section title="Audit log">
        <Audit params={params} />
      </Section>
    </>
  );
}

function Users({ list, error, onChanged }: { list: UserRow[] | undefined; error: unknown; onChanged: () => void }) {
  const me = useSession().principal.name;
  const [failure, setFailure] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const add = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    setBusy(true);
    try {
      await post('/api/v1/users', { name: String(data.get('name') ?? '').trim(), role: String(data.get('role')) });
      setFailure(undefined);
      form.reset();
      onChanged();
    } catch (err) {
      setFailure(err);
    } finally {
      setBusy(false);
    }
  };
  const disable = (name: string) =>
    post(`/api/v1/users/${encodeURIComponent(name)}/disable`).then(
      () => (setFailure(undefined), onChanged()),
      (err: unknown) => setFailure(err),
    );
  return (
    <>
      <Alert error={error ?? failure} />
      {!list ? (
        !error && <Loading />
      ) : (
        <TableWrap label="Users table">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">Source</th>
                <th scope="col">Since</th>
                <th scope="col">State</th>
              </tr>
            </thead>
            <tbody>
              {list.map((u) => (
                <tr key={u.source + u.name}>
                  <td>{u.name}</td>
                  <td>{u.role ?? <span class="muted">none now</span>}</td>
                  <td>{u.source}</td>
                  <td>
                    <Time at={u.createdAt} short />
                  </td>
                  <td>
                    {u.disabledAt ? (
                      <span class="muted">
                        disabled <Time at={u.disabledAt} short />
                      </span>
                    ) : u.name === me ? (
                      'active (you)'
                    ) : (
                      <button type="button" class="small danger" onClick={() => disable(u.name)} aria-label={`Disable ${u.name}`}>
                        Disable
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      )}
      <form onSubmit={add} class="inline-form">
        <label>
          New user name
          <input name="name" required pattern="[A-Za-z0-9._@\-]{1,64}" autocomplete="off" title="1 to 64 of A-Z a-z 0-9 . _ @ -" />
        </label>
        <label class="short">
          Role
          <select name="role">
            <option value="technician">technician</option>
            <option value="viewer">viewer</option>
            <option value="admin">admin</option>
          </select>
        </label>
        <button type="submit" disabled={busy}>
          Add user
        </button>
      </form>
    </>
  );
}

function Tokens({ users }: { users: UserRow[] }) {
  const tokens = useLoad(() => get<Page<ApiTokenRow>>('/api/v1/tokens?limit=1000'), 'tokens');
  const [failure, setFailure] = useState<unknown>();
  const [made, setMade] = useState<{ secret: string; token: ApiTokenRow; user: string }>();
  const local = users.filter((u) => u.source === 'local' && !u.disabledAt);
  const nameOf = (id: number) => users.find((u) => u.source === 'local' && u.id === id)?.name ?? `user ${id}`;
  const create = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    const user = String(data.get('user') ?? '');
    const label = String(data.get('label') ?? '').trim();
    const days = Number(data.get('days') || 0);
    try {
      const body = await post<{ secret: string; token: ApiTokenRow }>('/api/v1/tokens', {
        user,
        ...(label ? { label } : {}),
        ...(days > 0 ? { expiresInSeconds: Math.round(days * 86_400) } : {}),
      });
      setMade({ ...body, user });
      setFailure(undefined);
      form.reset();
      tokens.reload();
    } catch (err) {
      setFailure(err);
    }
  };
  const revoke = (id: number) =>
    post(`/api/v1/tokens/${id}/revoke`).then(
      () => (setFailure(undefined), tokens.reload()),
      (err: unknown) => setFailure(err),
    );
  return (
    <>
      <Alert error={tokens.error ?? failure} />
      {made && (
        <div class="note token-made">
          <p role="status">
            New token for {made.user}, shown this once: <code class="wrap-all secret">{made.secret}</code>
          </p>
          <CopyButton text={made.secret} label="Copy token" />
        </div>
      )}
      {!tokens.data ? (
        !tokens.error && <Loading />
      ) : (
        <TableWrap label="API tokens table">
          <table>
            <thead>
              <tr>
                <th scope="col">Token</th>
                <th scope="col">User</th>
                <th scope="col">Label</th>
                <th scope="col">Expires</th>
                <th scope="col">Last used</th>
                <th scope="col">State</th>
              </tr>
            </thead>
            <tbody>
              {[...tokens.data.items].reverse().map((t) => (
                <tr key={t.id}>
                  <td>{t.id}</td>
                  <td>{nameOf(t.userId)}</td>
                  <td>{t.label}</td>
                  <td>{t.expiresAt ? <Time at={t.expiresAt} short /> : 'never'}</td>
                  <td>{t.lastUsedAt ? <Time at={t.lastUsedAt} short /> : 'never'}</td>
                  <td>
                    {t.revokedAt ? (
                      <span class="muted">revoked</span>
                    ) : (
                      <button type="button" class="small danger" onClick={() => revoke(t.id)} aria-label={`Revoke token ${t.id}`}>
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      )}
      <form onSubmit={create} class="inline-form">
        <label class="short">
          For user
          <select name="user" required>
            {local.map((u) => (
              <option key={u.name} value={u.name}>
                {u.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          Token label
          <input name="label" maxLength={128} autocomplete="off" placeholder="api" />
        </label>
        <label class="short">
          Valid for (days)
          <input name="days" type="number" min={1} step={1} placeholder="no expiry" />
        </label>
        <button type="submit">Create API token</button>
      </form>
    </>
  );
}

function Audit({ params }: { params: URLSearchParams }) {
  const actor = params.get('actor') ?? '';
  const page = Math.max(1, Number.parseInt(params.get('auditPage') ?? '1', 10) || 1);
  const q = query({ actor, limit: AUDIT_PAGE, offset: (page - 1) * AUDIT_PAGE });
  const log = useLoad(() => get<Page<AuditEntry>>('/api/v1/audit' + q), q);
  const [typed, setTyped] = useState(actor);
  useEffect(() => setTyped(actor), [actor]);
  const to = (a: string, p: number) => go(href('admin', { actor: a || undefined, auditPage: p > 1 ? p : undefined }), true);
  const total = log.data?.total ?? 0;
  const items = log.data?.items ?? [];
  return (
    <>
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          to(typed.trim(), 1);
        }}
      >
        <label>
          Actor
          <input type="search" value={typed} onInput={(e) => setTyped(e.currentTarget.value)} autocomplete="off" placeholder="a user name" />
        </label>
        <button type="submit">Filter</button>
      </form>
      <Alert error={log.error} />
      <p class="count-line">{log.data ? `${total} entr${total === 1 ? 'y' : 'ies'}${actor ? ` by ${actor}` : ''}` : 'Loading…'}</p>
      <TableWrap label="Audit log table">
        <table>
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Outcome</th>
              <th scope="col">Details</th>
            </tr>
          </thead>
          <tbody>
            {items.map((a) => (
              <tr key={a.id}>
                <td>
                  <Time at={a.at} />
                </td>
                <td>
                  {a.actor} <span class="muted">({a.role})</span>
                </td>
                <td>{a.action}</td>
                <td class="wrap">{a.target}</td>
                <td class={a.outcome === 'refused' ? 'warn' : undefined}>{a.outcome}</td>
                <td class="wrap details">{a.details ? JSON.stringify(a.details) : ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </TableWrap>
      <div class="pager">
        <button type="button" disabled={page <= 1} onClick={() => to(actor, page - 1)}>
          Previous page
        </button>
        <span>
          Page {page} of {Math.max(1, Math.ceil(total / AUDIT_PAGE))}
        </span>
        <button type="button" disabled={page * AUDIT_PAGE >= total} onClick={() => to(actor, page + 1)}>
          Next page
        </button>
      </div>
    </>
  );
}
