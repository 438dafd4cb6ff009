/**
 * Polls `check` until it returns a defined value, for state with no event
 * to wait on (a row in a database another process writes, a file); rejects
 * with `message()` after `timeoutMs`. A failing check (an exception) counts
 * as not yet, and its error is in the final message.
 */
export async function pollUntil<T>(
  check: () => T | undefined | Promise<T | undefined>,
  options: { timeoutMs?: number; intervalMs?: number; message: () => string },
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 15_000);
  let lastError: unknown;
  for (;;) {
    try {
      const found = await check();
      if (found !== undefined) return found;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) throw new Error(`${options.message()}${lastError ? ` (last error: ${String(lastError)})` : ''}`);
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 50));
  }
}

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
  async until<T>(find: () => T | undefined, options: { timeoutMs: number; timeoutMessage: () => string; gone?: () => string | undefined }): Promise<T> {
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
