import { isIP } from 'node:net';

/* What the http listener's settings are checked against (schema.ts): host names, loopback addresses, cipher suites. */

/** A DNS name (labels of letters, digits and inner hyphens; no wildcard, no trailing dot). */
export const DNS_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** 127.0.0.0/8, ::1 or localhost: the addresses whose traffic never leaves the machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  // The URL parser writes every spelling of an IPv6 address the same way.
  return isIP(h) === 6 && !h.includes('%') && new URL(`http://[${h}]/`).hostname === '[::1]';
}

/**
 * The TLS cipher suites the listener may offer: AEAD with forward secrecy
 * (every TLS 1.3 suite; TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305).
 * The default offers them all in this order. No CBC, SHA-1 MAC, CCM, ARIA,
 * static RSA or DHE suite can be configured.
 */
export const STRONG_CIPHERS: readonly string[] = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
];
