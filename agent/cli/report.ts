import { Option, type Command } from 'commander';
import { ExitCode } from '../errors.js';
import { reportCsv, reportText, type ReportJson } from '../api/reportFormat.js';
import { FINDING_KINDS } from '../report/types.js';
import { apiOptions, runApi, type ApiOptions } from './apiCommand.js';

type ReportOptions = ApiOptions & { csv?: boolean; kind?: string };

/** `edge-agent report`: the device report through the daemon (it evaluates before answering). */
export function registerReportCommand(program: Command, result: { code: number }): void {
  apiOptions(
    program
      .command('report')
      .description('every device accounted for: shadow, unpatched, stale, expiring and revoked devices, with evidence (docs/report.md)')
      .option('--csv', 'CSV (RFC 4180) instead of the table')
      .addOption(new Option('--kind <kind>', 'only findings of this kind').choices([...FINDING_KINDS])),
    false,
  ).action(async (o: ReportOptions) => {
    if (o.csv && o.json) {
      process.stderr.write('edge-agent: --csv and --json: choose one\n');
      result.code = ExitCode.usage;
      return;
    }
    const path = `/api/v1/report${o.kind ? `?kind=${encodeURIComponent(o.kind)}` : ''}`;
    result.code = await runApi(
      o,
      async (client) => (await client.call<ReportJson>('GET', path)).body,
      (r) => (o.csv ? reportCsv(r.findings).replace(/^\uFEFF/, '') : reportText(r)),
    );
  });
}
