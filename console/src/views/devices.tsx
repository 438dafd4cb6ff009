import { useEffect, useState } from 'preact/hooks';
import { get, query } from '../api.js';
import { go, href } from '../route.js';
import { useCan } from '../session.js';
import { DEVICE_STATES, type Device, type Page, PROTOCOL_NAMES } from '../types.js';
import { Alert, count, useLoad } from '../ui.js';
import { type Decision, DecisionDialog, type Outcome, OutcomeNote } from './decide.js';
import { DeviceTable } from './deviceTable.js';

export const PAGE_SIZE = 50;
/** The filters the hash carries (and the API takes), in the order the form shows them. */
const TEXT_FILTERS = ['q', 'site', 'area', 'line'] as const;
const FILTERS = ['q', 'state', 'protocol', 'site', 'area', 'line', 'sort', 'order'] as const;
type Filters = Partial<Record<(typeof FILTERS)[number], string>>;

const filtersOf = (params: URLSearchParams): Filters => Object.fromEntries(FILTERS.map((f) => [f, params.get(f) ?? undefined]).filter(([, v]) => v));

/**
 * The inventory: search, filters and sort are done by the API and kept in
 * the hash (a reload or a shared link shows the same list); 50 a page;
 * several devices approved or rejected at once; the same list as CSV.
 */
export function Devices({ params }: { params: URLSearchParams }) {
  const can = useCan();
  const filters = filtersOf(params);
  const page = Math.max(1, Number.parseInt(params.get('page') ?? '1', 10) || 1);
  const offset = (page - 1) * PAGE_SIZE;
  const key = query({ ...filters, limit: PAGE_SIZE, offset });
  const list = useLoad(() => get<Page<Device>>('/api/v1/devices' + key), key, 15_000);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [deciding, setDeciding] = useState<Decision | undefined>();
  const [outcome, setOutcome] = useState<{ kind: Decision; outcomes: Outcome[] } | undefined>();
  // The text fields as typed; the hash follows after a pause in typing.
  const [typed, setTyped] = useState<Filters>(filters);
  const filterKey = query(filters);
  useEffect(() => {
    // What was typed stays when the hash says the same (a trailing space is not lost while typing "pump st").
    setTyped((prev) => ({
      ...filters,
      ...Object.fromEntries(TEXT_FILTERS.map((f) => [f, (prev[f]?.trim() ?? '') === (filters[f] ?? '') ? prev[f] : filters[f]])),
    }));
    setSelected(new Set());
    setOutcome(undefined);
  }, [filterKey]);

  const navigate = (next: Filters, nextPage = 1, replace = false) => go(href('devices', { ...next, page: nextPage > 1 ? nextPage : undefined }), replace);

  useEffect(() => {
    const changed = TEXT_FILTERS.some((f) => (typed[f]?.trim() ?? '') !== (filters[f] ?? ''));
    if (!changed) return;
    const t = setTimeout(() => navigate({ ...filters, ...Object.fromEntries(TEXT_FILTERS.map((f) => [f, typed[f]?.trim()])) }, 1, true), 300);
    return () => clearTimeout(t);
  });

  const set = (f: keyof Filters, v: string) => navigate({ ...filters, [f]: v || undefined });
  const sortBy = (column: string) => {
    const current = filters.sort ?? 'id';
    const order = current === column && (filters.order ?? 'asc') === 'asc' ? 'desc' : 'asc';
    navigate({ ...filters, sort: column, order }, 1);
  };

  const data = list.data;
  const total = data?.total ?? 0;
  const items = data?.items ?? [];
  const exportHref = '/api/v1/exports/devices.csv' + query(filters);
  const decide = can('devices.decide');

  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>Devices</h1>
        <a class="button small" href={exportHref} download="devices.csv">
          Export CSV
        </a>
      </div>
      <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter devices">
        <label class="grow">
          Search
          <input
            type="search"
            value={typed.q ?? ''}
            placeholder="id, name, maker, model, serial, asset tag, location"
            onInput={(e) => setTyped({ ...typed, q: e.currentTarget.value })}
          />
        </label>
        <label>
          State
          <select value={filters.state ?? ''} onChange={(e) => set('state', e.currentTarget.value)}>
            <option value="">Any</option>
            {DEVICE_STATES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Protocol
          <select value={filters.protocol ?? ''} onChange={(e) => set('protocol', e.currentTarget.value)}>
            <option value="">Any</option>
            {Object.entries(PROTOCOL_NAMES).map(([p, name]) => (
              <option key={p} value={p}>
                {name}
              </option>
            ))}
          </select>
        </label>
        {(['site', 'area', 'line'] as const).map((f) => (
          <label key={f} class="short">
            {f[0]!.toUpperCase() + f.slice(1)}
            <input value={typed[f] ?? ''} onInput={(e) => setTyped({ ...typed, [f]: e.currentTarget.value })} autocomplete="off" />
          </label>
        ))}
        {Object.keys(filters).some((f) => f !== 'sort' && f !== 'order') && (
          <button type="button" class="small link" onClick={() => navigate({ sort: filters.sort, order: filters.order })}>
            Clear filters
          </button>
        )}
      </form>
      {outcome && <OutcomeNote kind={outcome.kind} outcomes={outcome.outcomes} />}
      <Alert error={list.error} />
      <div class="table-bar">
        <p class="count" aria-live="polite">
          {data ? (total === 0 ? 'Showing 0 of 0' : `Showing ${count(offset + 1)}–${count(offset + items.length)} of ${count(total)}`) : 'Loading…'}
          {list.loading && data ? ' (updating…)' : ''}
        </p>
        {decide && (
          <div class="buttons">
            <button type="button" class="primary small" disabled={selected.size === 0} onClick={() => setDeciding('approve')}>
              Approve selected
            </button>
            <button type="button" class="danger small" disabled={selected.size === 0} onClick={() => setDeciding('reject')}>
              Reject selected
            </button>
            {selected.size > 0 && <span class="muted">{selected.size} selected</span>}
          </div>
        )}
      </div>
      <DeviceTable
        items={items}
        sort={filters.sort ?? 'id'}
        order={filters.order === 'desc' ? 'desc' : 'asc'}
        onSort={sortBy}
        selectable={decide}
        selected={selected}
        onSelect={setSelected}
        empty={data ? 'No device matches. Clear a filter or search for less.' : ''}
      />
      <div class="pager">
        <button type="button" disabled={page <= 1} onClick={() => navigate(filters, page - 1)}>
          Previous page
        </button>
        <span>
          Page {count(page)} of {count(Math.max(1, Math.ceil(total / PAGE_SIZE)))}
        </span>
        <button type="button" disabled={offset + items.length >= total} onClick={() => navigate(filters, page + 1)}>
          Next page
        </button>
      </div>
      {deciding && (
        <DecisionDialog
          kind={deciding}
          ids={[...selected]}
          onClose={() => setDeciding(undefined)}
          onDone={(outcomes) => {
            setDeciding(undefined);
            setOutcome({ kind: deciding, outcomes });
            setSelected(new Set());
            list.reload();
          }}
        />
      )}
    </>
  );
}
