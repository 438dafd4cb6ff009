import { AgentError } from '../errors.js';
import type { Repositories } from '../store/repositories.js';
import type { Affected, ConfigService } from './configService.js';
import { canonicalJson, sha256Hex, type ProfileDocument } from './profileDocument.js';
import { diffProfiles, type ProfileDiff } from './resolve.js';

/** A profile change that cannot be made as asked (the API answers its code). */
export class ProfileChangeError extends AgentError {
  constructor(
    readonly code: 'NO_SUCH_PROFILE' | 'NO_SUCH_DEVICE' | 'REFUSED' | 'DECOMMISSIONED',
    message: string,
  ) {
    super(message);
  }
}

export interface ApplyResult {
  name: string;
  /** created: a new version, now the head; unchanged: the head holds this very document. */
  outcome: 'created' | 'unchanged';
  version: number;
  /** Against the head before the change (none for a new profile). */
  previous?: number;
  dryRun: boolean;
  diff: ProfileDiff;
  affected: Affected[];
  /** Things stored that may be mistakes (overrides for devices the inventory does not know). */
  warnings: string[];
}

/**
 * Profile management as the API does it: each method runs inside the
 * caller's transaction (with its audit row) and commits the profile and the
 * desired states it moves together; delivery starts after the commit.
 */
export class ProfileManager {
  constructor(
    private readonly repos: Pick<Repositories, 'devices' | 'configs'>,
    private readonly service: Pick<ConfigService, 'reconcile' | 'heads'>,
  ) {}

  /** Stores `doc` as a new version unless the head holds it already; `dryRun` only says what would happen. */
  apply(doc: ProfileDocument, actor: string, dryRun: boolean): ApplyResult {
    const { configs, devices } = this.repos;
    const head = configs.head(doc.name);
    if (head && head.protocol !== doc.protocol)
      throw new ProfileChangeError(
        'REFUSED',
        `profile ${doc.name} is a ${head.protocol} profile; a version cannot change it to ${doc.protocol} (choose another name)`,
      );
    const sha = sha256Hex(canonicalJson(doc));
    const unchanged = head?.sha256 === sha;
    const version = unchanged ? head.version : (configs.latest(doc.name) ?? 0) + 1;
    const warnings = Object.keys(doc.overrides)
      .filter((id) => !devices.get(id))
      .map((id) => `overrides["${id}"]: no such device in the inventory (kept; it applies if the device appears)`);
    const trial = [...this.service.heads().filter((h) => h.name !== doc.name), { name: doc.name, version, document: doc }];
    let affected: Affected[];
    if (dryRun || unchanged) {
      affected = this.service.reconcile('all', trial, true);
    } else {
      configs.addVersion(doc, sha, actor);
      affected = this.service.reconcile('all', trial);
    }
    return {
      name: doc.name,
      outcome: unchanged ? 'unchanged' : 'created',
      version,
      ...(head ? { previous: head.version } : {}),
      dryRun,
      diff: diffProfiles(head?.document, doc),
      affected,
      warnings,
    };
  }

  /** Moves the head back (or forward) to a stored version. */
  rollback(name: string, version: number, actor: string): { name: string; from: number; to: number; outcome: 'moved' | 'unchanged'; affected: Affected[] } {
    const { configs } = this.repos;
    const head = configs.head(name);
    if (!head) throw new ProfileChangeError('NO_SUCH_PROFILE', `no profile ${name}`);
    if (!configs.version(name, version))
      throw new ProfileChangeError('NO_SUCH_PROFILE', `profile ${name} has no version ${version} (versions 1 to ${configs.latest(name)})`);
    if (head.version === version) return { name, from: version, to: version, outcome: 'unchanged', affected: [] };
    configs.moveHead(name, version, actor);
    return { name, from: head.version, to: version, outcome: 'moved', affected: this.service.reconcile('all') };
  }

  /** Pins a device to a profile (null: unpins; the selectors decide again). */
  assign(deviceId: string, profile: string | null): { deviceId: string; pinned: string | null; previous: string | null; affected: Affected[] } {
    const { configs, devices } = this.repos;
    const device = devices.get(deviceId);
    if (!device) throw new ProfileChangeError('NO_SUCH_DEVICE', `no device ${deviceId}`);
    if (device.state === 'decommissioned') throw new ProfileChangeError('DECOMMISSIONED', `${deviceId} is decommissioned: its record is final`);
    if (profile !== null) {
      const head = configs.head(profile);
      if (!head) throw new ProfileChangeError('NO_SUCH_PROFILE', `no profile ${profile}`);
      if (head.protocol !== device.protocol)
        throw new ProfileChangeError('REFUSED', `profile ${profile} is for ${head.protocol} devices; ${deviceId} is ${device.protocol}`);
    }
    const previous = configs.get(deviceId)?.pinnedProfile ?? null;
    if (previous !== profile)
      configs.update(deviceId, { pinned_profile: profile }, { event: profile ? 'assigned' : 'unassigned', profile: profile ?? previous, version: null });
    return { deviceId, pinned: profile, previous, affected: this.service.reconcile([deviceId]) };
  }

  /** Replaces a device's labels. */
  setLabels(
    deviceId: string,
    labels: Record<string, string>,
  ): { deviceId: string; labels: Record<string, string>; previous: Record<string, string>; affected: Affected[] } {
    const { configs, devices } = this.repos;
    const device = devices.get(deviceId);
    if (!device) throw new ProfileChangeError('NO_SUCH_DEVICE', `no device ${deviceId}`);
    if (device.state === 'decommissioned') throw new ProfileChangeError('DECOMMISSIONED', `${deviceId} is decommissioned: its record is final`);
    const previous = configs.labels(deviceId);
    configs.setLabels(deviceId, labels);
    return { deviceId, labels, previous, affected: this.service.reconcile([deviceId]) };
  }
}
