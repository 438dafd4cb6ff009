/**
 * `npm run bench`: every benchmark of the project, one table. Each figure
 * stands next to the limit it is compared with, measured in the same run
 * where that is possible. Later parts add their benchmark to BENCHES.
 */
import { apiBench } from './api.js';
import { caBench } from './ca.js';
import { configRolloutBench } from './configRollout.js';
import { consoleBench } from './console.js';
import { directoryBench } from './directory.js';
import { enrollBench } from './enroll.js';
import { enrollFlowBench } from './enrollFlow.js';
import { footprintBench } from './footprint.js';
import { opcuaBench } from './opcua.js';
import { opcuaPushBench } from './opcuaPush.js';
import { storeBench } from './store.js';
import { stormBench } from './storm.js';
import type { BenchResult } from './result.js';
import { syncBench } from './sync.js';

const rows: BenchResult[] = [];
/** The CA's P-256 issuance of this run (the `ca` bench), per second of wall time and per CPU-second. */
const caIssuance = () => {
  const row = rows.find((r) => r.name.startsWith('ca: issue from P-256'));
  return row ? { wall: row.value, cpu: row.perCpuSecond ?? row.value } : undefined;
};

const BENCHES: { name: string; run: () => BenchResult[] | Promise<BenchResult[]> }[] = [
  { name: 'store', run: storeBench },
  { name: 'ca', run: caBench },
  { name: 'enroll-flow', run: () => enrollFlowBench(caIssuance) },
  { name: 'enroll', run: () => enrollBench(() => caIssuance()?.cpu) },
  { name: 'opcua', run: opcuaBench },
  { name: 'opcua-push', run: opcuaPushBench },
  { name: 'sync', run: syncBench },
  { name: 'api', run: apiBench },
  { name: 'directory', run: directoryBench },
  { name: 'console', run: consoleBench },
  { name: 'config', run: configRolloutBench },
  { name: 'storm', run: stormBench },
  { name: 'footprint', run: footprintBench },
];

const only = process.argv.slice(2);
for (const bench of BENCHES) {
  if (only.length > 0 && !only.includes(bench.name)) continue;
  rows.push(...(await bench.run()));
}

const fmt = (v: number) => Math.round(v).toLocaleString('en-US');
const widths = [Math.max(9, ...rows.map((r) => r.name.length)), Math.max(6, ...rows.map((r) => `${fmt(r.value)} ${r.unit}`.length))];
process.stdout.write(`node ${process.version}, ${new Date().toISOString()}\n`);
process.stdout.write(`${'benchmark'.padEnd(widths[0]!)}  ${'result'.padStart(widths[1]!)}  compared with\n`);
for (const r of rows) {
  process.stdout.write(`${r.name.padEnd(widths[0]!)}  ${`${fmt(r.value)} ${r.unit}`.padStart(widths[1]!)}  ${r.limit}\n`);
}
