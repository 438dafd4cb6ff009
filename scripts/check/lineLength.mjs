#!/usr/bin/env node
/**
 * Lines keep to 160 characters (biome.jsonc). Biome wraps code to that width
 * but cannot wrap a long string, comment, regular expression or template
 * literal, and has no rule for line length; this check finds what it leaves.
 * It reads every .ts, .mjs and .cjs file under the directories given (default:
 * agent certs scripts test) and fails, naming file:line: length, on each line
 * longer than 160 characters (Unicode code points, not bytes).
 * Paths are relative to the working directory: `node scripts/check/lineLength.mjs`
 * from the project root.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';

const MAX = 160;

function* files(path) {
  if (statSync(path).isDirectory()) {
    for (const entry of readdirSync(path).sort()) {
      if (entry !== 'node_modules' && entry !== 'dist') yield* files(join(path, entry));
    }
  } else if (/\.(?:ts|mjs|cjs)$/.test(path)) {
    yield path;
  }
}

const roots = process.argv.length > 2 ? process.argv.slice(2) : ['agent', 'certs', 'scripts', 'test'];
const problems = [];
for (const root of roots) {
  if (!existsSync(root)) continue;
  for (const file of files(root)) {
    const name = relative('.', file).split(sep).join('/');
    readFileSync(file, 'utf8')
      .split(/\r?\n/)
      .forEach((line, i) => {
        const length = [...line].length;
        if (length > MAX) problems.push(`${name}:${i + 1}: ${length}`);
      });
  }
}
if (problems.length > 0) {
  console.error(`Lines over ${MAX} characters (split the string or comment; biome cannot):\n${problems.map((p) => `  ${p}`).join('\n')}`);
  process.exit(1);
}
