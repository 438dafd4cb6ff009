/**
 * Lets a test wait for something that arrives by event (a log line, a
 * datagram): `wake()` on each arrival, `until(find)` to wait for a match.
 */
export class Waiters {
  private pending: (() => void)[] = [];

  wake(): void {
    for (const w of this.pending.splice(0)) w();
  }

  /**
   * Resolves with `find()`'s first defined result. Rejects with `gone()`'s
   * message as soon as it returns one, or with `timeoutMessage()` after `timeoutMs`.
   */
  async until<T>(
    find: () => T | undefined,
    options: { timeoutMs: number; timeoutMessage: () => string; gone?: () => string | undefined },
  ): Promise<T> {
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      const found = find();
      if (found !== undefined) return found;
      const gone = options.gone?.();
      if (gone) throw new Error(gone);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(options.timeoutMessage());
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.pending.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}
