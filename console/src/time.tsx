const DATE = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit' });
const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto', style: 'short' });
const STEPS: [Intl.RelativeTimeFormatUnit, number][] = [
  ['second', 60],
  ['minute', 60],
  ['hour', 24],
  ['day', 30],
  ['month', 12],
  ['year', Number.POSITIVE_INFINITY],
];

/** "3 min ago", "in 2 days": the largest unit that fits. */
export function relative(date: Date, now = Date.now()): string {
  let v = (date.getTime() - now) / 1000;
  for (const [unit, size] of STEPS) {
    if (Math.abs(v) < size || unit === 'year') return RELATIVE.format(Math.round(v), unit);
    v /= size;
  }
  return '';
}

export const localTime = (date: Date): string => DATE.format(date);

/** A time as a person reads it: local date and time, how long ago; the full ISO time on hover (title). */
export function Time({ at, short }: { at: string | undefined; short?: boolean }) {
  if (!at) return <span class="muted">—</span>;
  const d = new Date(at);
  if (Number.isNaN(d.getTime())) return <span>{at}</span>;
  const iso = d.toISOString();
  return (
    <time dateTime={iso} title={iso}>
      {short ? relative(d) : `${localTime(d)} (${relative(d)})`}
    </time>
  );
}
