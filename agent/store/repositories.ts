import { ActionRepository } from './actionRepository.js';
import { AuditRepository } from './auditRepository.js';
import { CertificateRepository } from './certificateRepository.js';
import { ConfigRepository } from './configRepository.js';
import { ConsoleSessionRepository } from './consoleSessionRepository.js';
import type { Store } from './database.js';
import { DeviceRepository } from './deviceRepository.js';
import { DiscoveryRunRepository } from './discoveryRunRepository.js';
import { EnrollmentRepository } from './enrollmentRepository.js';
import { PushRepository } from './pushRepository.js';
import { RunsRepository } from './runsRepository.js';
import { SessionRepository } from './sessionRepository.js';
import { SyncRepository } from './syncRepository.js';
import { UserRepository } from './userRepository.js';

/**
 * Every repository over one open store, built once by whoever opened it
 * (the daemon's composition root, a CLI command) and handed to the parts
 * that use them: no part builds its own over a store it was given.
 * Repositories hold no state of their own, so one set serves them all.
 */
export interface Repositories {
  readonly devices: DeviceRepository;
  readonly enrollments: EnrollmentRepository;
  readonly actions: ActionRepository;
  readonly certificates: CertificateRepository;
  readonly runs: RunsRepository;
  readonly discoveryRuns: DiscoveryRunRepository;
  readonly pushes: PushRepository;
  readonly sync: SyncRepository;
  readonly users: UserRepository;
  readonly audit: AuditRepository;
  readonly sessions: SessionRepository;
  readonly consoleSessions: ConsoleSessionRepository;
  /** Configuration profiles, device labels and each device's configuration (issue 17). */
  readonly configs: ConfigRepository;
}

/** What the repositories tell their opener, after the commit (see Store.afterCommit). */
export interface RepositoryHooks {
  /** A device's record changed (created, a transition, online or offline), and the transaction that changed it committed. */
  deviceChanged?: (deviceId: string) => void;
}

export function openRepositories(store: Store, hooks: RepositoryHooks = {}): Repositories {
  return {
    devices: new DeviceRepository(store, hooks.deviceChanged),
    enrollments: new EnrollmentRepository(store),
    actions: new ActionRepository(store),
    certificates: new CertificateRepository(store),
    runs: new RunsRepository(store),
    discoveryRuns: new DiscoveryRunRepository(store),
    pushes: new PushRepository(store),
    sync: new SyncRepository(store),
    users: new UserRepository(store),
    audit: new AuditRepository(store),
    sessions: new SessionRepository(store),
    consoleSessions: new ConsoleSessionRepository(store),
    configs: new ConfigRepository(store, hooks.deviceChanged),
  };
}
