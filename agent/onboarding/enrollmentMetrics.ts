import { Counter, Gauge, type Registry } from 'prom-client';
import type { CertErrorCode } from '../../certs/errors.js';

/**
 * Why a request was answered `rejected`; a label of
 * edge_agent_enrollment_rejected_total, so a flood of bad requests shows in
 * /metrics. A refusal by the CA (before or after policy) is labelled with
 * its CertError code in lower case (`csr_malformed`, `csr_requests_ca`, …),
 * a bounded set.
 */
export type RejectionReason =
  | 'too_large'
  | 'not_json'
  | 'too_deeply_nested'
  | 'prototype_key'
  | 'schema'
  | 'response_topic'
  | 'request_id_reused'
  | 'reserved_id'
  | 'policy'
  | 'technician'
  | 'too_many_pending'
  | Lowercase<CertErrorCode>;

/** Why a message was dropped without an answer (it could not be answered, or answering would feed a flood). */
export type DropReason = 'unknown_topic' | 'bad_device_id' | 'rate_limited_device' | 'rate_limited_global' | 'queue_full';

/** The enrollment protocol's metrics on the agent's registry. */
export class EnrollmentMetrics {
  private readonly requests: Counter<'outcome'>;
  private readonly rejections: Counter<'reason'>;
  private readonly drops: Counter<'reason'>;

  constructor(registry: Registry, queueDepth: () => number) {
    const registers = [registry];
    this.requests = new Counter({
      name: 'edge_agent_enrollment_requests_total',
      help: 'Enrollment requests answered, by outcome: issued, pending, rejected, repeated',
      labelNames: ['outcome'],
      registers,
    });
    this.rejections = new Counter({
      name: 'edge_agent_enrollment_rejected_total',
      help: 'Enrollment requests answered rejected, by reason (every one is also counted in edge_agent_enrollment_requests_total{outcome="rejected"})',
      labelNames: ['reason'],
      registers,
    });
    this.drops = new Counter({
      name: 'edge_agent_enrollment_dropped_total',
      help: 'Enrollment messages dropped without an answer, by reason',
      labelNames: ['reason'],
      registers,
    });
    new Gauge({
      name: 'edge_agent_enrollment_queue_depth',
      help: 'Enrollment requests waiting to be handled',
      registers,
      collect() {
        this.set(queueDepth());
      },
    });
  }

  answered(outcome: 'issued' | 'pending' | 'repeated'): void {
    this.requests.inc({ outcome });
  }

  rejected(reason: RejectionReason): void {
    this.requests.inc({ outcome: 'rejected' });
    this.rejections.inc({ reason });
  }

  dropped(reason: DropReason): void {
    this.drops.inc({ reason });
  }
}
