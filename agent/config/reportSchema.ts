import { z } from 'zod';
import { parseVersion } from '../inventory/softwareVersion.js';

const int = (min: number, max: number, what: string) => z.number().int().min(min).max(max).describe(`${what} (whole number, ${min} to ${max})`);
const text = (what: string) => z.string().min(1).max(128).describe(what);

const VERSION_FORMS = '(semver such as 1.4.2 or 2.0.0-rc.1, or dotted numbers such as 1.2.10; a leading v is allowed)';

/** The problems of a rule's versions, each with its path inside the rule; none for a usable rule. */
function ruleProblems(rule: { minVersion?: string | undefined; badVersions?: string[] | undefined }): { path: (string | number)[]; message: string }[] {
  const problems: { path: (string | number)[]; message: string }[] = [];
  if (rule.minVersion === undefined && (rule.badVersions ?? []).length === 0)
    problems.push({ path: [], message: 'a rule needs minVersion or badVersions (or both)' });
  if (rule.minVersion !== undefined && !parseVersion(rule.minVersion))
    problems.push({
      path: ['minVersion'],
      message: `"${rule.minVersion}" is not a version the report can compare ${VERSION_FORMS}`,
    });
  for (const [i, v] of (rule.badVersions ?? []).entries())
    if (!parseVersion(v)) problems.push({ path: ['badVersions', i], message: `"${v}" is not a version the report can compare ${VERSION_FORMS}` });
  return problems;
}

/**
 * One patch rule: the devices it covers (manufacturer and model patterns with
 * `*` and `?`, case-insensitive; absent: any) and what their nameplate's
 * software version must be. Versions must parse (semver or dotted numbers):
 * a rule the report could not apply is a configuration error with its path.
 */
const patchRule = z
  .strictObject({
    manufacturer: text('manufacturer pattern (* and ?), as the nameplate reports it').optional(),
    model: text('model pattern (* and ?), as the nameplate reports it').optional(),
    minVersion: text('the lowest software version that counts as patched (semver or dotted numbers, v prefix allowed)').optional(),
    badVersions: z.array(text('a known-bad software version')).max(256).optional(),
    reason: z.string().max(512).optional().describe('why, shown with the finding (an advisory, a CVE)'),
  })
  .superRefine((rule, ctx) => {
    for (const p of ruleProblems(rule)) ctx.addIssue({ code: 'custom', path: p.path, message: p.message });
  });

/**
 * report: "every device accounted for and patched" (docs/report.md). The
 * agent evaluates the findings every `intervalSeconds` and on request.
 */
export const reportSchema = z.strictObject({
  enabled: z.boolean().describe('evaluate the device report (shadow, unpatched, stale, expiring devices) and send its findings upstream'),
  intervalSeconds: int(10, 86_400, 'how often the findings are evaluated, in seconds'),
  staleDays: int(1, 3_650, 'a provisioned device not seen for this many days is reported stale'),
  expiringDays: int(1, 3_650, 'a certificate ending within this many days, with no successor, is reported'),
  sightingDays: int(1, 3_650, 'a shadow sighting (a client, an announcement, a key, a revoked device) is reported for this many days after it was last seen'),
  patchPolicy: z.array(patchRule).max(1_000).describe('rules: manufacturer/model patterns and the minimum software version or known-bad versions'),
});

export type ReportConfig = z.infer<typeof reportSchema>;

export function defaultReportConfig(): ReportConfig {
  return { enabled: true, intervalSeconds: 300, staleDays: 7, expiringDays: 14, sightingDays: 7, patchPolicy: [] };
}
