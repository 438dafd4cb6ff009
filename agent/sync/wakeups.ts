/**
 * The workers' waits: a sleep that ends early when woken (a request, a
 * reload, stop, a change told on the bus), and a look every interval for
 * what another process may have left (a request in sync_state from the CLI
 * with --local), which wakes them too.
 */
export class Wakeups {
  private readonly wakers = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** A change was told while no worker slept: the next sleep ends at once. */
  private kept = false;

  /** Waits `ms`, or less when woken. */
  sleep(ms: number): Promise<void> {
    if (this.kept) {
      this.kept = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakers.add(done);
    });
  }

  /** Ends every sleep now. */
  wake(): void {
    for (const w of [...this.wakers]) w();
  }

  /**
   * Something new to look at (a committed change): ends every sleep now, or,
   * when every worker is busy, the next sleep, so that a change told while a
   * worker had already looked is not left for the next interval.
   */
  nudge(): void {
    if (this.wakers.size === 0) this.kept = true;
    else this.wake();
  }

  /** Every `intervalMs()`, runs `look`; wakes the sleepers when it says so. Errors are `look`'s to handle. */
  poll(intervalMs: () => number, look: () => boolean): void {
    this.timer = setTimeout(() => {
      if (look()) this.wake();
      if (!this.stopped) this.poll(intervalMs, look);
    }, intervalMs());
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.wake();
  }
}
