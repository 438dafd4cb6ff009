import type { X509Certificate } from 'node:crypto';
import type { PolicyAction, PolicyRule } from '../config/schema.js';
import type { Device, Nameplate } from '../inventory/device.js';
import type { TokenRecord } from '../store/enrollmentRepository.js';
import { verifyClaim } from './claim.js';

export interface PolicyInput {
  device: Device | undefined;
  nameplate: Nameplate & { manufacturer: string; model: string; serialNumber: string };
  csrDer: Buffer;
  enrollmentToken?: string;
  claim?: { certificate: string; signature: string };
}

export interface Decision {
  action: PolicyAction;
  reason: string;
  /** Which rule (or which fact) decided, for the audit: "rule 1 (token)", "default", "technician". */
  decidedBy: string;
  /** The token to count a use of when the request is approved. */
  tokenId?: string;
}

export interface PolicyConfig {
  rules: PolicyRule[];
  default: PolicyAction;
  renewal: 'reject' | 'hold' | 'policy';
}

/** `*` any run, `?` one character, case-insensitive, whole string. */
export function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

type CompiledRule =
  | { kind: 'token'; action: PolicyAction }
  | { kind: 'claim'; action: PolicyAction; cas: X509Certificate[]; file: string }
  | { kind: 'allowlist'; action: PolicyAction; match: Partial<Record<'manufacturer' | 'model' | 'serialNumber', RegExp>>; text: string };

/**
 * The enrollment policy: technician decisions first (a block, a
 * pre-approval), then renewal, then the rules in order; the first rule that
 * applies decides, and a request no rule decides gets the default. A token
 * or claim that is present but invalid rejects the request at its rule: a
 * device that shows a wrong credential is not merely unknown.
 */
export class EnrollmentPolicy {
  private readonly rules: CompiledRule[];

  constructor(
    private readonly config: PolicyConfig,
    loadCas: (file: string) => X509Certificate[],
    private readonly findToken: (secret: string) => TokenRecord | undefined,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.rules = config.rules.map((r): CompiledRule => {
      if (r.kind === 'claim') return { kind: 'claim', action: r.action, cas: loadCas(r.manufacturerCaFile), file: r.manufacturerCaFile };
      if (r.kind === 'token') return { kind: 'token', action: r.action };
      const match: Partial<Record<'manufacturer' | 'model' | 'serialNumber', RegExp>> = {};
      const parts: string[] = [];
      for (const key of ['manufacturer', 'model', 'serialNumber'] as const) {
        if (r[key] !== undefined) {
          match[key] = globToRegExp(r[key]);
          parts.push(`${key}=${r[key]}`);
        }
      }
      return { kind: 'allowlist', action: r.action, match, text: parts.join(' ') || 'everything' };
    });
  }

  evaluate(input: PolicyInput): Decision {
    const { device } = input;
    if (device?.state === 'decommissioned') return { action: 'reject', reason: 'device is decommissioned', decidedBy: 'inventory' };
    if (device?.preapproved) return { action: 'approve', reason: 'approved in advance by a technician', decidedBy: 'technician' };
    const ruled = this.renewalOrRules(input);
    if (device?.blocked && ruled.action === 'approve') {
      return {
        action: 'hold',
        reason: `a technician ${device.state === 'revoked' ? 'revoked' : 'rejected'} this device before; a technician must approve it again`,
        decidedBy: 'inventory',
      };
    }
    return ruled;
  }

  private renewalOrRules(input: PolicyInput): Decision {
    if (input.device?.state === 'provisioned' && input.device.certificateSerial) {
      if (this.config.renewal === 'reject')
        return { action: 'reject', reason: 'device is already provisioned and renewal is not allowed (mqtt.policy.renewal: reject)', decidedBy: 'renewal' };
      if (this.config.renewal === 'hold')
        return { action: 'hold', reason: 'renewal of a provisioned device waits for a technician (mqtt.policy.renewal: hold)', decidedBy: 'renewal' };
    }
    for (const [i, rule] of this.rules.entries()) {
      const decision = this.apply(rule, input, `rule ${i + 1} (${rule.kind})`);
      if (decision) return decision;
    }
    return { action: this.config.default, reason: 'no rule applies: mqtt.policy.default', decidedBy: 'default' };
  }

  private apply(rule: CompiledRule, input: PolicyInput, decidedBy: string): Decision | undefined {
    if (rule.kind === 'token') {
      if (input.enrollmentToken === undefined) return undefined;
      const token = this.findToken(input.enrollmentToken);
      const now = this.now();
      if (!token) return { action: 'reject', reason: 'enrollment token is not known', decidedBy };
      if (token.revokedAt) return { action: 'reject', reason: `enrollment token ${token.id} was revoked`, decidedBy };
      if (token.expiresAt <= now) return { action: 'reject', reason: `enrollment token ${token.id} expired at ${token.expiresAt.toISOString()}`, decidedBy };
      if (token.uses >= token.maxUses) return { action: 'reject', reason: `enrollment token ${token.id} is used up (${token.maxUses} uses)`, decidedBy };
      return { action: rule.action, reason: `enrollment token ${token.id} (${token.label})`, decidedBy, tokenId: token.id };
    }
    if (rule.kind === 'claim') {
      if (input.claim === undefined) return undefined;
      const result = verifyClaim(input.claim, input.csrDer, input.nameplate.serialNumber, rule.cas, this.now());
      if (!result.ok) return { action: 'reject', reason: result.reason, decidedBy };
      return { action: rule.action, reason: `manufacturer claim ${result.subject} chains to ${rule.file}`, decidedBy };
    }
    for (const [key, re] of Object.entries(rule.match)) {
      if (!re.test(input.nameplate[key as 'manufacturer' | 'model' | 'serialNumber'])) return undefined;
    }
    return { action: rule.action, reason: `allowlist ${rule.text}`, decidedBy };
  }
}
