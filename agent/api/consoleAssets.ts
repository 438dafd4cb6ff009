import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { Logger } from '../log.js';
import { sendError, type HttpService } from './httpServer.js';

/** Where `npm run build` puts the console (dist/console, next to dist/agent). */
export const CONSOLE_DIR = fileURLToPath(new URL('../../console/', import.meta.url));

/**
 * The page's policy: its own script and style only (no inline script, no eval), pictures of its own or
 * made by it (the QR codes), requests to this listener only, no frames, no plugins, no base or form elsewhere.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "font-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

interface Asset {
  type: string;
  body: Buffer;
  gzipped: Buffer;
  etag: string;
}

function load(file: string): Asset {
  const body = readFileSync(file);
  return {
    type: TYPES[extname(file)] ?? 'application/octet-stream',
    body,
    gzipped: gzipSync(body, { level: 9 }),
    etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`,
  };
}

/** Reads the built console into memory (a few tens of kilobytes): what is served never changes under a running agent. */
export function loadConsole(dir = CONSOLE_DIR): { index?: Asset; assets: Map<string, Asset> } {
  const assets = new Map<string, Asset>();
  const index = existsSync(join(dir, 'index.html')) ? load(join(dir, 'index.html')) : undefined;
  const assetDir = join(dir, 'assets');
  if (existsSync(assetDir)) for (const name of readdirSync(assetDir)) if (TYPES[extname(name)]) assets.set(name, load(join(assetDir, name)));
  return { ...(index ? { index } : {}), assets };
}

function send(req: IncomingMessage, res: ServerResponse, asset: Asset, headers: Record<string, string>): void {
  const common = { 'content-type': asset.type, etag: asset.etag, 'cache-control': 'no-cache', vary: 'accept-encoding', ...headers };
  if (req.headers['if-none-match'] === asset.etag) {
    res.writeHead(304, common);
    res.end();
    return;
  }
  const gzip = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
  const body = gzip ? asset.gzipped : asset.body;
  res.writeHead(200, { ...common, ...(gzip ? { 'content-encoding': 'gzip' } : {}), 'content-length': String(body.length) });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/**
 * The technicians' web console: GET / (the page) and GET /assets/<file>,
 * built by `npm run build` into dist/console. It works with no internet
 * (everything is bundled) and talks only to /api/v1. The page carries a
 * strict Content-Security-Policy; every answer of the listener also says
 * nosniff, no referrer and no framing (HttpService).
 */
export function registerConsole(http: HttpService, deps: { log: Logger; dir?: string }): void {
  const built = loadConsole(deps.dir);
  if (!built.index) deps.log.warn({ dir: deps.dir ?? CONSOLE_DIR }, 'the web console is not built (npm run build): GET / answers 503');
  http.route('GET', '/', (req, res) => {
    if (!built.index) return sendError(res, 'CONSOLE_NOT_BUILT', 'the web console is not built: run npm run build, then restart the agent');
    send(req, res, built.index, { 'content-security-policy': CONTENT_SECURITY_POLICY });
  });
  http.routePrefix('GET', '/assets/', (req, res) => {
    const name = new URL(req.url ?? '/', 'http://local').pathname.slice('/assets/'.length);
    const asset = built.assets.get(name);
    if (!asset) return sendError(res, 'NOT_FOUND', `no console asset ${name}`);
    send(req, res, asset, { 'content-security-policy': CONTENT_SECURITY_POLICY });
  });
}
