import type { Device } from '../inventory/device.js';

/**
 * What enrollment tells the device report (agent/report/sightings.ts) of a
 * request it decided: a revoked or decommissioned device asking again, an id
 * a valid certificate holds presented with another key. Never throws back.
 */
export interface EnrollmentWitness {
  enrollmentRequest(e: { name: string; requestId: string; spkiSha256: string; device: Device | undefined; action: 'approve' | 'hold' | 'reject' }): void;
}
