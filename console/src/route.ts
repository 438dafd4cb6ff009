import { useEffect, useState } from 'preact/hooks';

/** Where the page is: the hash `#/devices/mqtt%3Apump-7?x=1` as path segments (decoded) and query. */
export interface Route {
  segments: string[];
  params: URLSearchParams;
}

export function parseHash(hash: string): Route {
  const raw = hash.replace(/^#\/?/, '');
  const at = raw.indexOf('?');
  const path = at < 0 ? raw : raw.slice(0, at);
  const segments = path
    .split('/')
    .filter((s) => s !== '')
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return s;
      }
    });
  return { segments, params: new URLSearchParams(at < 0 ? '' : raw.slice(at + 1)) };
}

export function useRoute(): Route {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const changed = () => setHash(location.hash);
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  return parseHash(hash);
}

/** A hash link: `href('devices', id)` -> `#/devices/mqtt%3Apump-7`, with an optional query. */
export function href(...parts: (string | Record<string, string | number | undefined>)[]): string {
  const path: string[] = [];
  let q = '';
  for (const p of parts) {
    if (typeof p === 'string') path.push(encodeURIComponent(p));
    else {
      const s = new URLSearchParams();
      for (const [k, v] of Object.entries(p)) if (v !== undefined && v !== '') s.set(k, String(v));
      q = s.toString() ? '?' + s.toString() : '';
    }
  }
  return '#/' + path.join('/') + q;
}

/** Goes to a hash; `replace` keeps the browser history from filling up with every keystroke of a search. */
export function go(to: string, replace = false): void {
  if (location.hash === to) return;
  if (replace) {
    history.replaceState(null, '', to);
    dispatchEvent(new HashChangeEvent('hashchange'));
  } else location.hash = to;
}
