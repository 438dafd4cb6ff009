#!/usr/bin/env node
/**
 * Builds the web console (console/) into dist/console/: the page's script
 * (Preact, bundled and minified by esbuild into assets/app.js), its style
 * sheet (assets/app.css) and index.html. No source map ships: the daemon
 * serves what is in dist/console/assets, and a map would only be weight.
 * Prints the raw and gzipped size of what the first load fetches (index.html,
 * app.js, app.css), the number the README states.
 * Run from the project root: `npm run build` runs it after tsc.
 */
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const out = join('dist', 'console');
const assets = join(out, 'assets');
rmSync(out, { recursive: true, force: true });
mkdirSync(assets, { recursive: true });

const common = { bundle: true, minify: true, sourcemap: false, legalComments: 'none', logLevel: 'warning' };
await build({
  ...common,
  entryPoints: ['console/src/main.tsx'],
  outfile: join(assets, 'app.js'),
  format: 'esm',
  target: 'es2020',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  define: { 'process.env.NODE_ENV': '"production"' },
});
await build({ ...common, entryPoints: ['console/src/app.css'], outfile: join(assets, 'app.css'), target: ['chrome90', 'firefox90', 'safari14'] });
copyFileSync(join('console', 'index.html'), join(out, 'index.html'));

const first = [join(out, 'index.html'), join(assets, 'app.js'), join(assets, 'app.css')];
let raw = 0;
let gzipped = 0;
for (const file of first) {
  const bytes = readFileSync(file);
  const gz = gzipSync(bytes, { level: 9 }).length;
  raw += bytes.length;
  gzipped += gz;
  console.log(`${file}: ${bytes.length} bytes, ${gz} gzipped`);
}
console.log(`console first load: ${(raw / 1024).toFixed(1)} KiB, ${(gzipped / 1024).toFixed(1)} KiB gzipped`);
