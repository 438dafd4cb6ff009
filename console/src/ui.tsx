import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { message } from './api.js';

/** An API error's message, where screen readers announce it. */
export function Alert({ error }: { error: unknown }) {
  if (error === undefined || error === null || error === '') return null;
  return (
    <p role="alert" class="alert">
      {typeof error === 'string' ? error : message(error)}
    </p>
  );
}

export function Loading({ what }: { what?: string }) {
  return <p class="muted loading">Loading{what ? ` ${what}` : ''}…</p>;
}

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/**
 * Loads with `fn` whenever `key` changes; a slower answer to an older key is
 * dropped, so typing a search never shows an older result last. With
 * `every` (ms), it loads again quietly while the page is visible: what the
 * agent does meanwhile (devices arriving, a push advancing) shows up.
 */
export function useLoad<T>(fn: () => Promise<T>, key: string, every?: number): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: unknown; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  const latest = useRef(0);
  const current = useRef(fn);
  current.current = fn;
  const run = useCallback((quiet: boolean) => {
    const n = ++latest.current;
    if (!quiet) setState((s) => ({ ...s, loading: true }));
    current.current().then(
      (data) => n === latest.current && setState({ data, loading: false }),
      (error: unknown) => n === latest.current && setState((s) => ({ data: s.data, error, loading: false })),
    );
  }, []);
  // A layout effect: the request leaves with the render that asks for it, not after the next paint (useEffect's time).
  useLayoutEffect(() => run(false), [key, tick]);
  useEffect(() => {
    if (!every) return;
    const timer = setInterval(() => document.visibilityState === 'visible' && run(true), every);
    return () => clearInterval(timer);
  }, [key, every]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data: state.data, error: state.error, loading: state.loading, reload };
}

/**
 * A titled part of a page: a region named by its heading, so that a field is
 * found within its part ("Site" in "Location and asset tag", not in a filter).
 */
export function Section({ title, children, id, actions }: { title: string; children: ComponentChildren; id?: string; actions?: ComponentChildren }) {
  const hid = `h-${id ?? title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return (
    <section class="card" aria-labelledby={hid}>
      <div class="card-head">
        <h2 id={hid}>{title}</h2>
        {actions}
      </div>
      {children}
    </section>
  );
}

/**
 * A modal dialog (the native <dialog>: focus moves into it, Escape closes
 * it, the page behind is inert).
 */
export function Dialog({ title, onClose, children }: { title: string; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => d?.close();
  }, []);
  return (
    <dialog ref={ref} aria-labelledby="dialog-title" onClose={onClose}>
      <h2 id="dialog-title">{title}</h2>
      {children}
    </dialog>
  );
}

/** A definition list of label/value pairs; values left out when undefined. */
export function Facts({ rows }: { rows: [string, ComponentChildren][] }) {
  const shown = rows.filter(([, v]) => v !== undefined && v !== null && v !== '');
  if (shown.length === 0) return <p class="muted">Nothing recorded.</p>;
  return (
    <dl class="facts">
      {shown.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

const NUMBER = new Intl.NumberFormat();
/** A count as the reader's locale writes it (10,000). */
export const count = (n: number): string => NUMBER.format(n);

export function StateBadge({ state }: { state: string }) {
  return <span class={`badge state-${state}`}>{state}</span>;
}

/** Copies text to the clipboard, saying so. */
export function CopyButton({ text, label }: { text: string; label: string }) {
  const [done, setDone] = useState(false);
  return (
    <button
      type="button"
      class="small"
      onClick={() =>
        navigator.clipboard?.writeText(text).then(
          () => setDone(true),
          () => setDone(false),
        )
      }
    >
      {done ? 'Copied' : label}
    </button>
  );
}

/** Saves text as a file the browser downloads (a Blob URL: img-src and connect-src stay 'self'). */
export function download(name: string, text: string, type = 'application/x-pem-file'): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A table wider than the screen scrolls in its own box (the page body never scrolls sideways). */
export function TableWrap({ label, children }: { label: string; children: ComponentChildren }) {
  return (
    // biome-ignore lint/a11y/noNoninteractiveTabindex: a keyboard user must reach the box to scroll it sideways.
    <section class="table-wrap" tabIndex={0} aria-label={label}>
      {children}
    </section>
  );
}
