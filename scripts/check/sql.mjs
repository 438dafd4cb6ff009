#!/usr/bin/env node
/**
 * SQL lives only in agent/store/ (CONVENTIONS.md). dependency-cruiser keeps
 * better-sqlite3 there; this check finds the SQL text itself: it parses every
 * TypeScript file under the directories given (default: agent certs) outside
 * agent/store/ and fails, naming file:line, on
 *   - a call .prepare(…) or .pragma(…) with an argument, or .exec() of a
 *     string or template literal on anything but a regular expression;
 *   - a string or template literal that holds an SQL statement: SELECT … FROM,
 *     INSERT INTO, UPDATE x SET, DELETE FROM, CREATE/ALTER/DROP TABLE (INDEX,
 *     VIEW, TRIGGER), or a text that begins with PRAGMA, SELECT, INSERT,
 *     UPDATE, DELETE or REPLACE.
 * Keywords count in capitals only, as all SQL here is written, so prose
 * ("select the device from the list") passes.
 * Paths are relative to the working directory: `node scripts/check/sql.mjs`
 * from the project root.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import ts from 'typescript';

const ALLOWED = /^agent\/store\//;
const STATEMENT = [
  /\bSELECT\b[\s\S]*?\bFROM\b/,
  /\bINSERT\s+(?:OR\s+[A-Z]+\s+)?INTO\b/,
  /\bUPDATE\s+[A-Za-z_][\w.]*\s+SET\b/,
  /\bDELETE\s+FROM\b/,
  /\b(?:CREATE|ALTER|DROP)\s+(?:TEMP(?:ORARY)?\s+)?(?:TABLE|(?:UNIQUE\s+)?INDEX|VIEW|TRIGGER)\b/,
  /^\s*(?:PRAGMA|SELECT|INSERT|UPDATE|DELETE|REPLACE)\s/,
];

function* files(path) {
  if (statSync(path).isDirectory()) {
    for (const entry of readdirSync(path).sort()) {
      if (entry !== 'node_modules' && entry !== 'dist') yield* files(join(path, entry));
    }
  } else if (/\.[cm]?tsx?$/.test(path) && !path.endsWith('.d.ts')) {
    yield path;
  }
}

const text = (node) => {
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return node.text;
  if (ts.isTemplateExpression(node)) return [node.head.text, ...node.templateSpans.map((s) => s.literal.text)].join(' ? ');
  return undefined;
};
const excerpt = (s) => JSON.stringify(s.replace(/\s+/g, ' ').trim().slice(0, 70));

function check(file) {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const found = [];
  const report = (node, what) =>
    found.push(`${relative('.', file).split(sep).join('/')}:${source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1}: ${what}`);
  const visit = (node) => {
    if (ts.isCallExpression(node) && ts.isPropertyAccessExpression(node.expression) && node.arguments.length > 0) {
      const method = node.expression.name.text;
      const receiver = node.expression.expression;
      const literal = text(node.arguments[0]);
      if (method === 'prepare' || method === 'pragma') report(node, `SQL call .${method}(${literal === undefined ? '…' : excerpt(literal)})`);
      else if (method === 'exec' && literal !== undefined && !ts.isRegularExpressionLiteral(receiver)) report(node, `SQL call .exec(${excerpt(literal)})`);
      else ts.forEachChild(node, visit);
      return;
    }
    const literal = text(node);
    if (literal !== undefined && STATEMENT.some((re) => re.test(literal))) {
      report(node, `SQL text ${excerpt(literal)}`);
      return;
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

const roots = process.argv.length > 2 ? process.argv.slice(2) : ['agent', 'certs'];
const problems = [];
for (const root of roots) {
  for (const file of files(root)) {
    if (!ALLOWED.test(relative('.', file).split(sep).join('/'))) problems.push(...check(file));
  }
}
if (problems.length > 0) {
  console.error(`SQL outside agent/store/ (move it into a repository method there):\n${problems.map((p) => `  ${p}`).join('\n')}`);
  process.exit(1);
}
