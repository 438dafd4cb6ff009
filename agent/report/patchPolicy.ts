import type { Nameplate } from '../inventory/device.js';
import { globToRegExp } from '../onboarding/policy.js';
import { compareVersions, parseVersion, type Version } from '../inventory/softwareVersion.js';

/** One rule of report.patchPolicy (agent/config/reportSchema.ts checks its versions parse). */
export interface PatchRule {
  manufacturer?: string | undefined;
  model?: string | undefined;
  minVersion?: string | undefined;
  badVersions?: string[] | undefined;
  reason?: string | undefined;
}

interface CompiledRule {
  index: number;
  rule: PatchRule;
  manufacturer?: RegExp;
  model?: RegExp;
  min?: Version;
  bad: { text: string; version: Version }[];
}

/** What the policy says of one device's nameplate. */
export type PatchVerdict =
  | { status: 'unmatched' }
  | { status: 'compliant'; rules: number[] }
  | { status: 'unknown'; rules: number[]; version: string | null; why: string }
  | { status: 'unpatched'; rules: number[]; version: string; violations: Violation[] };

export interface Violation {
  /** The rule's index in report.patchPolicy. */
  rule: number;
  /** `below minVersion 1.2.0` or `known bad version 1.1.3`. */
  what: string;
  minVersion?: string;
  badVersion?: string;
  reason?: string;
}

/**
 * report.patchPolicy: every rule whose manufacturer and model patterns (`*`,
 * `?`, case-insensitive, whole string; absent: any) match a device applies
 * to it. A device below a rule's minVersion, or on one of its badVersions,
 * is unpatched; one a rule applies to whose nameplate reports no version, or
 * one that does not parse, is unknown (never compliant).
 */
export class PatchPolicy {
  private readonly rules: CompiledRule[];

  constructor(rules: readonly PatchRule[]) {
    this.rules = rules.map((rule, index) => {
      const c: CompiledRule = { index, rule, bad: [] };
      if (rule.manufacturer !== undefined) c.manufacturer = globToRegExp(rule.manufacturer);
      if (rule.model !== undefined) c.model = globToRegExp(rule.model);
      // The schema refused unparseable versions; a rule built around it anyway keeps only what parses.
      const min = rule.minVersion === undefined ? undefined : parseVersion(rule.minVersion);
      if (min) c.min = min;
      for (const text of rule.badVersions ?? []) {
        const version = parseVersion(text);
        if (version) c.bad.push({ text, version });
      }
      return c;
    });
  }

  get size(): number {
    return this.rules.length;
  }

  judge(nameplate: Nameplate): PatchVerdict {
    const matching = this.rules.filter(
      (r) => (!r.manufacturer || r.manufacturer.test(nameplate.manufacturer ?? '')) && (!r.model || r.model.test(nameplate.model ?? '')),
    );
    if (matching.length === 0) return { status: 'unmatched' };
    const rules = matching.map((r) => r.index);
    const text = nameplate.firmwareVersion?.trim();
    if (!text) return { status: 'unknown', rules, version: null, why: 'the nameplate reports no software version' };
    const version = parseVersion(text);
    if (!version) return { status: 'unknown', rules, version: text, why: `"${text}" is not a version the report can compare` };
    const violations: Violation[] = [];
    for (const r of matching) {
      const reason = r.rule.reason !== undefined ? { reason: r.rule.reason } : {};
      if (r.min && compareVersions(version, r.min) < 0)
        violations.push({ rule: r.index, what: `below minVersion ${r.rule.minVersion!}`, minVersion: r.rule.minVersion!, ...reason });
      const bad = r.bad.find((b) => compareVersions(version, b.version) === 0);
      if (bad) violations.push({ rule: r.index, what: `known bad version ${bad.text}`, badVersion: bad.text, ...reason });
    }
    return violations.length > 0 ? { status: 'unpatched', rules, version: text, violations } : { status: 'compliant', rules };
  }
}
