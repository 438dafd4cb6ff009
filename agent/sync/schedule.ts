/** What the schedule knows of one stored batch (in memory: a restart starts every batch afresh). */
interface Entry {
  /** Not sent again, by any worker, before this time (ms since the epoch). */
  retryAt: number;
  /** 5xx answers (503 excepted) to this batch so far. */
  serverErrors: number;
  /**
   * From when a batch the receiver accepted proves it up while this one gets
   * 5xx: the start of the first attempt answered 5xx; for a half made by a
   * 5xx split, the split (its sibling went at the same moment).
   */
  since?: number;
  /** Made by splitting a batch on 5xx answers. */
  half: boolean;
}

/**
 * One retry schedule per stored batch, shared by the workers: a batch that
 * failed waits for its own time and is sent by one worker then, never by the
 * other one meanwhile. It also keeps what the receiver's 5xx answers tell:
 * how many a batch has had, and whether the receiver accepted other batches
 * meanwhile (an item at fault) or not (a receiver that is down).
 */
export class BatchSchedule {
  private readonly entries = new Map<string, Entry>();
  private acceptedAt = -1;

  private entry(key: string): Entry {
    let e = this.entries.get(key);
    if (!e) {
      e = { retryAt: 0, serverErrors: 0, half: false };
      this.entries.set(key, e);
    }
    return e;
  }

  /** Whether the batch may be sent now. */
  due(key: string, now = Date.now()): boolean {
    return (this.entries.get(key)?.retryAt ?? 0) <= now;
  }

  /** The batch is not sent again before `at`. */
  retryAt(key: string, at: number): void {
    this.entry(key).retryAt = at;
  }

  /** The earliest time one of `keys` waits for, if any waits. */
  earliest(keys: Iterable<string>, now = Date.now()): number | undefined {
    let min: number | undefined;
    for (const key of keys) {
      const at = this.entries.get(key)?.retryAt ?? 0;
      if (at > now && (min === undefined || at < min)) min = at;
    }
    return min;
  }

  /** Ends every wait (sync now, SIGHUP): each batch is due at once. */
  wakeAll(): void {
    for (const e of this.entries.values()) e.retryAt = 0;
  }

  /** The receiver accepted a batch (200). */
  accepted(at = Date.now()): void {
    this.acceptedAt = Math.max(this.acceptedAt, at);
  }

  /** A 5xx answer to an attempt started at `sentAt`; returns how many this batch has had. */
  serverError(key: string, sentAt: number): number {
    const e = this.entry(key);
    e.since ??= sentAt;
    return ++e.serverErrors;
  }

  /** Whether the receiver accepted another batch while this one got 5xx answers (for a half: since the split). */
  receiverUp(key: string): boolean {
    const since = this.entries.get(key)?.since;
    return since !== undefined && this.acceptedAt >= since;
  }

  isHalf(key: string): boolean {
    return this.entries.get(key)?.half ?? false;
  }

  /** The halves of a batch split on 5xx answers, made at `at`. */
  halves(keys: string[], at = Date.now()): void {
    for (const key of keys) this.entries.set(key, { retryAt: 0, serverErrors: 0, since: at, half: true });
  }

  /** The batch is answered or gone. */
  forget(key: string): void {
    this.entries.delete(key);
  }

  /** Drops what is kept of batches no longer stored. */
  keepOnly(keys: ReadonlySet<string>): void {
    for (const key of this.entries.keys()) if (!keys.has(key)) this.entries.delete(key);
  }
}
