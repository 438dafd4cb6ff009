import { FINDING_KINDS, type Finding, type FindingKind } from '../report/types.js';
import { reportCsv, type FindingJson, type ReportJson } from './reportFormat.js';
import type { ReportService } from '../report/reportService.js';
import { ApiError, type QuerySpec, type RouteContext, type Route } from './router.js';

export interface ReportRouteDeps {
  /** The report service (absent in a listing of the routes). */
  report?: Pick<ReportService, 'view' | 'enabled'>;
}

const KIND_QUERY: QuerySpec = { kind: { kind: 'enum', values: FINDING_KINDS } };
const REPORT_QUERY: QuerySpec = { ...KIND_QUERY, format: { kind: 'enum', values: ['json', 'csv'] } };

const findingJson = (f: Finding): FindingJson => ({
  kind: f.kind,
  subject: f.subject,
  deviceId: f.deviceId,
  summary: f.summary,
  evidence: f.evidence,
  firstSeen: f.firstSeen.toISOString(),
  lastSeen: f.lastSeen.toISOString(),
  openedAt: f.openedAt.toISOString(),
});

/** GET /api/v1/report and its CSV: the open findings, evaluated fresh before the answer. */
export function reportRoutes(deps: ReportRouteDeps): Route[] {
  const view = (ctx: RouteContext): ReportJson => {
    const report = deps.report;
    if (!report?.enabled) throw new ApiError('REFUSED', 'the device report is off (report.enabled: false)');
    const r = report.view(ctx.query.text('kind') as FindingKind | undefined);
    return { generatedAt: r.generatedAt, counts: r.counts, findings: r.findings.map(findingJson) };
  };
  const csv = (ctx: RouteContext) => {
    const body = reportCsv(view(ctx).findings);
    ctx.res.writeHead(200, {
      'content-type': 'text/csv; charset=utf-8',
      'content-disposition': 'attachment; filename="report.csv"',
      'cache-control': 'no-store',
    });
    ctx.res.end(body);
    return undefined;
  };
  return [
    {
      method: 'GET',
      path: '/api/v1/report',
      permission: 'report.read',
      summary: 'the device report: shadow, unpatched, stale, expiring and revoked devices with their evidence (docs/report.md)',
      query: REPORT_QUERY,
      handle: (ctx) => (ctx.query.text('format') === 'csv' ? csv(ctx) : { body: view(ctx) }),
    },
    {
      method: 'GET',
      path: '/api/v1/report.csv',
      permission: 'report.read',
      summary: 'the device report as CSV',
      query: KIND_QUERY,
      handle: csv,
    },
  ];
}
