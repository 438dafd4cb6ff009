import { csvField } from './consoleRoutes.js';

/** A finding as the API answers it (dates as ISO text). */
export interface FindingJson {
  kind: string;
  subject: string;
  deviceId: string | null;
  summary: string;
  evidence: Record<string, unknown>;
  firstSeen: string;
  lastSeen: string;
  openedAt: string;
}

export interface ReportJson {
  generatedAt: string;
  counts: Record<string, number>;
  findings: FindingJson[];
}

export const REPORT_CSV_COLUMNS = 'kind,subject,deviceId,summary,evidence,firstSeen,lastSeen,openedAt';

/** The report as CSV (RFC 4180, CRLF, a byte order mark first as the devices export): the evidence as one JSON field. */
export function reportCsv(findings: readonly FindingJson[]): string {
  const rows = findings.map((f) =>
    [f.kind, f.subject, f.deviceId ?? '', f.summary, JSON.stringify(f.evidence), f.firstSeen, f.lastSeen, f.openedAt].map(csvField).join(','),
  );
  return `\uFEFF${[REPORT_CSV_COLUMNS, ...rows].map((l) => `${l}\r\n`).join('')}`;
}

/** The report as a readable table: counts, then one block per finding. */
export function reportText(r: ReportJson): string {
  const open = Object.entries(r.counts).filter(([, n]) => n > 0);
  const lines = [`device report at ${r.generatedAt}: ${r.findings.length} open finding(s)`];
  if (open.length > 0) lines.push(`  ${open.map(([k, n]) => `${k} ${n}`).join(', ')}`);
  if (r.findings.length > 0) {
    const width = Math.max(...r.findings.map((f) => f.kind.length));
    lines.push('');
    for (const f of r.findings) {
      lines.push(`${f.kind.padEnd(width)}  ${f.subject}${f.deviceId && f.deviceId !== f.subject ? ` (${f.deviceId})` : ''}`);
      lines.push(`${' '.repeat(width)}  ${f.summary}`);
      lines.push(`${' '.repeat(width)}  first seen ${f.firstSeen}, last seen ${f.lastSeen}, opened ${f.openedAt}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
