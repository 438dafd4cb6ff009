import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { apiRoutes } from '../../agent/api/apiRoutes.js';
import { PERMISSIONS } from '../../agent/api/auth.js';
import { describeQuery } from '../../agent/api/router.js';
import { REPO } from '../helpers/daemon.js';

describe('docs/api.md', () => {
  const doc = readFileSync(join(REPO, 'docs', 'api.md'), 'utf8');
  const routes = apiRoutes({
    log: pino({ level: 'silent' }),
    config: () => {
      throw new Error('unused');
    },
    store: undefined as never,
    repos: undefined as never,
    bus: undefined as never,
    ca: undefined as never,
    registry: new Registry(),
    logins: undefined as never,
    watch: undefined as never,
  });

  it('lists every route of the API with the permission it needs, on one line', () => {
    const rows = doc.split('\n').filter((l) => /^\| `(GET|POST|PUT|DELETE) /.test(l));
    const documented = rows.map((l) => /^\| `(\w+) ([^`?]+)[^`]*` \| `([\w.]+)` \|/.exec(l)?.slice(1, 4).join(' '));
    expect(documented.sort()).toEqual(routes.map((r) => `${r.method} ${r.path} ${r.permission}`).sort());
  });

  it('gives every route the query parameters, ranges and defaults its declaration has, and no list route without limit and offset', () => {
    const rows = new Map(
      doc
        .split('\n')
        .map((l) => /^\| `(\w+ [^`]+)` \| `[\w.]+` \| (.*?) \| /.exec(l))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => [m[1]!, m[2]!]),
    );
    for (const r of routes) {
      expect(rows.get(`${r.method} ${r.path}`), `${r.method} ${r.path}`).toBe(describeQuery(r.query));
      // Only a GET takes query parameters; a list takes both limit and offset.
      if (r.method !== 'GET') expect(r.query, `${r.method} ${r.path}`).toBeUndefined();
      if (r.query && ('limit' in r.query || 'offset' in r.query)) expect(Object.keys(r.query), r.path).toEqual(expect.arrayContaining(['limit', 'offset']));
    }
  });

  it('names every permission in the roles table as auth.ts gives it: its reach and each role', () => {
    for (const [permission, row] of Object.entries(PERMISSIONS)) {
      const line = doc.split('\n').find((l) => l.startsWith('| `') && l.includes(`\`${permission}\``) && / (yes|no) \|/.test(l));
      expect(line, permission).toBeDefined();
      const cells = line!
        .split('|')
        .map((c) => c.trim())
        .slice(-6, -1);
      expect(cells, permission).toEqual([
        `\`${row.reach}\``,
        ...['admin', 'technician', 'contractor', 'viewer'].map((r) => ((row.roles as readonly string[]).includes(r) ? 'yes' : 'no')),
      ]);
    }
  });
});
