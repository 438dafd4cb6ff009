/**
 * The host names a request may put in its Host header: localhost,
 * 127.0.0.1, [::1], http.host and every http.names entry (IPv6 in
 * brackets), lower case.
 */
export function listenerNames(host: string, names: readonly string[]): Set<string> {
  const all = ['localhost', '127.0.0.1', '::1', host, ...names];
  return new Set(all.map((n) => (n.includes(':') ? `[${n}]` : n).toLowerCase()));
}

/**
 * Whether a Host header names the listener: one of `names`, with any port
 * or none. The port is not checked: what defeats DNS rebinding is the name
 * (a page can rebind its own name, never make the browser send another),
 * and a forwarded port (Docker's -p 8471:8470, an SSH tunnel) keeps working.
 */
export function hostAllowed(header: string | undefined, names: ReadonlySet<string>): boolean {
  if (!header) return false;
  const m = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/i.exec(header.trim());
  return m !== null && names.has(m[1]!.toLowerCase());
}
