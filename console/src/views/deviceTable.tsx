import { href } from '../route.js';
import { Time } from '../time.js';
import { type Device, PROTOCOL_NAMES } from '../types.js';
import { StateBadge, TableWrap } from '../ui.js';

/** The columns: header, the API's sort key (none: not sortable), the cell. */
const COLUMNS: [string, string | undefined, (d: Device) => preact.ComponentChildren][] = [
  [
    'ID',
    'id',
    (d) => (
      <a href={href('devices', d.id)} class="mono">
        {d.id}
      </a>
    ),
  ],
  ['Name', 'name', (d) => d.nameplate.displayName || d.name],
  ['State', 'state', (d) => <StateBadge state={d.state} />],
  ['Protocol', 'protocol', (d) => PROTOCOL_NAMES[d.protocol] ?? d.protocol],
  ['Manufacturer', 'manufacturer', (d) => d.nameplate.manufacturer],
  ['Model', 'model', (d) => d.nameplate.model],
  ['Asset tag', 'assetTag', (d) => d.assetTag],
  ['Location', undefined, (d) => [d.location?.site, d.location?.area, d.location?.line, d.location?.cell].filter(Boolean).join(' / ')],
  ['Online', undefined, (d) => (d.online ? <span class="online">online</span> : <span class="muted">offline</span>)],
  ['Last seen', 'lastSeen', (d) => <Time at={d.lastSeen} short />],
];

interface Props {
  items: Device[];
  sort: string;
  order: 'asc' | 'desc';
  onSort: (column: string) => void;
  selectable: boolean;
  selected: Set<string>;
  onSelect: (s: Set<string>) => void;
  empty: string;
}

/** The device list: sortable headers (buttons; aria-sort says the order), one checkbox per row when decisions are allowed. */
export function DeviceTable({ items, sort, order, onSort, selectable, selected, onSelect, empty }: Props) {
  const all = items.length > 0 && items.every((d) => selected.has(d.id));
  const toggle = (id: string, on: boolean) => {
    const next = new Set(selected);
    if (on) next.add(id);
    else next.delete(id);
    onSelect(next);
  };
  const toggleAll = (on: boolean) => {
    const next = new Set(selected);
    for (const d of items)
      if (on) next.add(d.id);
      else next.delete(d.id);
    onSelect(next);
  };
  return (
    <TableWrap label="Device list">
      <table class="devices">
        <thead>
          <tr>
            {selectable && (
              <th class="check">
                <input type="checkbox" aria-label="Select all on this page" checked={all} onChange={(e) => toggleAll(e.currentTarget.checked)} />
              </th>
            )}
            {COLUMNS.map(([title, key]) => (
              <th key={title} aria-sort={key && key === sort ? (order === 'asc' ? 'ascending' : 'descending') : undefined} scope="col">
                {key ? (
                  <button type="button" class="sort" onClick={() => onSort(key)}>
                    {title}
                  </button>
                ) : (
                  title
                )}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {items.map((d) => (
            <tr key={d.id} class={selected.has(d.id) ? 'selected' : undefined}>
              {selectable && (
                <td class="check">
                  <input type="checkbox" aria-label={`Select ${d.id}`} checked={selected.has(d.id)} onChange={(e) => toggle(d.id, e.currentTarget.checked)} />
                </td>
              )}
              {COLUMNS.map(([title, , cell]) => (
                <td key={title}>{cell(d)}</td>
              ))}
            </tr>
          ))}
          {items.length === 0 && empty && (
            <tr>
              <td colSpan={COLUMNS.length + (selectable ? 1 : 0)} class="empty">
                {empty}
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </TableWrap>
  );
}
