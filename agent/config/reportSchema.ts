import { z } from 'zod';

const int = (min: number, max: number, what: string) => z.number().int().min(min).max(max).describe(`${what} (whole number, ${min} to ${max})`);

/**
 * report: "every device accounted for and patched" (docs/report.md). The
 * agent evaluates the findings every `intervalSeconds` and on request.
 * (The helper that builds the report adds patchPolicy here.)
 */
export const reportSchema = z.strictObject({
  enabled: z.boolean().describe('evaluate the device report (shadow, unpatched, stale, expiring devices) and send its findings upstream'),
  intervalSeconds: int(10, 86_400, 'how often the findings are evaluated, in seconds'),
  staleDays: int(1, 3_650, 'a provisioned device not seen for this many days is reported stale'),
  expiringDays: int(1, 3_650, 'a certificate ending within this many days, with no successor, is reported'),
});

export type ReportConfig = z.infer<typeof reportSchema>;

export function defaultReportConfig(): ReportConfig {
  return { enabled: true, intervalSeconds: 300, staleDays: 7, expiringDays: 14 };
}
