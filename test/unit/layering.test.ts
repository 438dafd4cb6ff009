import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';

/**
 * The checks of `npm run check` (pretest) fail on a deliberate violation and
 * name it. Each runs with the project's own configuration on a small tree
 * written to a temporary directory; the real tree passes in pretest itself.
 */
const ROOT = resolve(import.meta.dirname, '../..');
const run = promisify(execFile);

/** Runs a check in the fixture tree; resolves with its exit code and output whether it passes or not. */
async function check(cwd: string, file: string, args: string[]): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run(file, args, { cwd, env: { ...process.env, NO_COLOR: '1' } });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

const FIXTURE: Record<string, string> = {
  'agent/log.ts': 'export const log = 1;\n',
  'agent/api/server.ts': 'export const api = 1;\n',
  'agent/transport/client.ts': 'export const client = 1;\n',
  'agent/runs/recorder.ts': 'export interface RunLog {\n  begin(): void;\n}\nexport const recorder = 1;\n',
  // certs/ is a library: nothing from agent/.
  'certs/authority.ts': "import { log } from '../agent/log.js';\n\nexport const authority = log;\n",
  // Upward: the store imports the API.
  'agent/store/deviceRepository.ts': "import { api } from '../api/server.js';\n\nexport const devices = api;\n",
  // Allowed: the store implements the storage interface its user owns (a type).
  'agent/store/runsRepository.ts': "import type { RunLog } from '../runs/recorder.js';\n\nexport const runs: RunLog = { begin() {} };\n",
  // Not allowed: anything else from above, even from the same module.
  'agent/store/runsState.ts': "import { recorder } from '../runs/recorder.js';\n\nexport const state = recorder;\n",
  // Peers of layer 3 and of layer 4; discovery <-> onboarding is a cycle as well.
  'agent/ca/caService.ts': "import { client } from '../transport/client.js';\n\nexport const ca = client;\n",
  'agent/discovery/scan.ts': "import { decide } from '../onboarding/policy.js';\n\nexport const scan = () => decide;\n",
  'agent/onboarding/policy.ts': "import { scan } from '../discovery/scan.js';\n\nexport const decide = () => scan;\n",
  // A library type outside transport/, better-sqlite3 and SQL outside store/.
  'agent/sync/upstream.ts': "import type { MqttClient } from 'mqtt';\n\nexport type Upstream = MqttClient;\n",
  'agent/api/devices.ts': [
    "import Database from 'better-sqlite3';",
    '',
    "const db = new Database(':memory:');",
    "export const all = db.prepare('SELECT * FROM devices').all();",
    "export const words = 'select the device from the list'; // prose, not SQL",
    "export const id = /^(\\d+)$/.exec('12')?.[1];",
    '',
  ].join('\n'),
  'certs/serials.ts': 'export const next = (table: string) => `UPDATE ${table} SET last = last + 1`;\n',
  // No cycle at run time: one of its imports is a type.
  'agent/api/routes.ts': "import type { Handler } from './handler.js';\n\nexport const routes: Handler[] = [];\n",
  'agent/api/handler.ts': "import { routes } from './routes.js';\n\nexport type Handler = () => void;\nexport const count = () => routes.length;\n",
  // A directory of agent/ in no layer.
  'agent/plugins/loader.ts': "import { log } from '../log.js';\n\nexport const loader = log;\n",
  // Lint and format: a line the formatter would wrap, and a debugger statement.
  'agent/transport/long.ts': [
    'export function long(a: number): number {',
    '  debugger;',
    `  return [${Array.from({ length: 40 }, (_, i) => `a + ${i}`).join(', ')}].length;`,
    '}',
    '',
  ].join('\n'),
  // Line length: a string no formatter wraps (176 characters); a comment of 160 characters but more bytes passes.
  'test/unit/message.test.ts': [`// ${'é'.repeat(157)}`, `export const message = '${'x'.repeat(150)}';`, ''].join('\n'),
};

describe('the checks of npm run check', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'layering-'));
    for (const [path, text] of Object.entries(FIXTURE)) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), text);
    }
    for (const file of ['package.json', 'biome.jsonc', '.dependency-cruiser.cjs']) copyFileSync(join(ROOT, file), join(dir, file));
    writeFileSync(
      join(dir, 'tsconfig.test.json'),
      JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true }, include: ['agent', 'certs'] }),
    );
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('layers: fails and names each forbidden import; lets the store import the type its user owns, and a cycle through an import type pass', async () => {
    const { code, output } = await check(dir, join(ROOT, 'node_modules/.bin/depcruise'), ['agent', 'certs', '--config', '.dependency-cruiser.cjs']);
    expect(code).not.toBe(0);
    for (const violation of [
      'certs-standalone: certs/authority.ts → agent/log.ts',
      'layer-2-store-upward: agent/store/deviceRepository.ts → agent/api/server.ts',
      'layer-2-store-upward-runtime: agent/store/runsState.ts → agent/runs/recorder.ts',
      'layer-3-peers: agent/ca/caService.ts → agent/transport/client.ts',
      'layer-4-peers: agent/discovery/scan.ts → agent/onboarding/policy.ts',
      'layer-4-peers: agent/onboarding/policy.ts → agent/discovery/scan.ts',
      /library-types-stop-at-transport: agent\/sync\/upstream\.ts → \S*node_modules\/mqtt\//,
      /sqlite-only-in-store: agent\/api\/devices\.ts → \S*node_modules\/better-sqlite3\//,
      'not-in-a-layer: agent/plugins/loader.ts → agent/log.ts',
      'no-circular: agent/discovery/scan.ts',
    ]) {
      expect(output).toMatch(violation);
    }
    expect(output).not.toContain('agent/store/runsRepository.ts');
    expect(output).not.toContain('agent/api/routes.ts');
  });

  it('SQL: fails and names file:line of each statement outside agent/store/, and passes prose and regular expressions', async () => {
    const { code, output } = await check(dir, process.execPath, [join(ROOT, 'scripts/check/sql.mjs')]);
    expect(code).toBe(1);
    expect(output.trim().split('\n').slice(1)).toEqual([
      '  agent/api/devices.ts:4: SQL call .prepare("SELECT * FROM devices")',
      '  certs/serials.ts:1: SQL text "UPDATE ? SET last = last + 1"',
    ]);
  });

  it('line length: fails and names file:line: length of each line over 160 characters, counting characters, not bytes', async () => {
    const { code, output } = await check(dir, process.execPath, [join(ROOT, 'scripts/check/lineLength.mjs')]);
    expect(code).toBe(1);
    expect(output.trim().split('\n').slice(1)).toEqual(['  agent/transport/long.ts:3: 327', '  test/unit/message.test.ts:2: 176']);
  });

  it('lint and format: fails on a debugger statement and on a line over 160 characters', async () => {
    const { code, output } = await check(dir, join(ROOT, 'node_modules/.bin/biome'), [
      'ci',
      '--error-on-warnings',
      '--colors=off',
      '--vcs-enabled=false',
      'agent',
    ]);
    expect(code).not.toBe(0);
    expect(output).toContain('agent/transport/long.ts:2:3 lint/suspicious/noDebugger');
    expect(output).toContain('agent/transport/long.ts format');
  });
});
