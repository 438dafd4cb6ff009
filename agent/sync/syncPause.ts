import { statSync } from 'node:fs';
import type { Logger } from '../log.js';
import type { SyncRepository } from '../store/syncRepository.js';
import type { UpstreamAdapter } from './adapter.js';
import type { SyncMetrics } from './syncMetrics.js';
import { SYNC_STATE } from './syncState.js';

/**
 * The pause of the sync (a token the receiver refuses after one more read
 * of it, or item after item refused alone): kept in sync_state, so that it
 * and its alarm outlive a restart; lifted when a technician asks (sync now)
 * or the token file changes.
 */
export class SyncPause {
  private tokenMtime = 0;

  constructor(private readonly deps: { log: Logger; repo: SyncRepository; metrics: SyncMetrics; tokenFile: () => string }) {}

  /**
   * The alarm as the last run left it; a pause from before a restart compares with the token file
   * as it was when it began, so a token fixed meanwhile is seen.
   */
  start(): void {
    const { repo, metrics } = this.deps;
    metrics.paused.set(repo.getState<string>(SYNC_STATE.paused) ? 1 : 0);
    this.tokenMtime = repo.getState<number>(SYNC_STATE.pausedTokenMtime) ?? this.mtime();
  }

  private mtime(): number {
    try {
      const file = this.deps.tokenFile();
      return file ? statSync(file).mtimeMs : 0;
    } catch {
      return 0;
    }
  }

  pause(reason: string): void {
    const { repo } = this.deps;
    repo.setState(SYNC_STATE.paused, reason);
    repo.setState(SYNC_STATE.lastError, reason);
    this.tokenMtime = this.mtime();
    repo.setState(SYNC_STATE.pausedTokenMtime, this.tokenMtime);
    this.deps.metrics.paused.set(1);
    this.deps.log.error({ reason }, 'sync paused until the token file changes or edge-agent sync now');
  }

  /**
   * Whether the sync is paused now: 'resumed' when it was and `asked` (a
   * technician's request) or a changed token file lifts it (the token is
   * read again from `client`).
   */
  check(asked: boolean, client: UpstreamAdapter): 'running' | 'paused' | 'resumed' {
    const { repo } = this.deps;
    if (!repo.getState<string>(SYNC_STATE.paused)) return 'running';
    const mtime = this.mtime();
    if (!asked && mtime === this.tokenMtime) return 'paused';
    this.tokenMtime = mtime;
    client.rereadToken();
    repo.setState(SYNC_STATE.paused, undefined);
    repo.setState(SYNC_STATE.pausedTokenMtime, undefined);
    this.deps.metrics.paused.set(0);
    this.deps.log.info('sync resumed');
    return 'resumed';
  }
}
