import type { Logger } from '../log.js';

/** Keys followed within one window, at most (past that, only the overall budget applies). */
const MAX_KEYS = 1_000;

/**
 * Rate-limits the log lines of an event an outsider can cause at will
 * (failed logins): at most `perKey` lines a window for one key (a client
 * address) and `perWindow` in all, so that a flood from one client neither
 * fills the log nor hides another client's lines. What was left out is
 * counted and said in one line when the window ends.
 */
export class LogThrottle {
  private windowStart = 0;
  private logged = 0;
  private readonly byKey = new Map<string, number>();
  private suppressed = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    private readonly limits: { perKey: number; perWindow: number; windowMs: number },
  ) {}

  warn(key: string, fields: Record<string, unknown>, message: string, summary: string): void {
    const now = Date.now();
    const { perKey, perWindow, windowMs } = this.limits;
    if (now - this.windowStart >= windowMs) {
      this.windowStart = now;
      this.logged = 0;
      this.byKey.clear();
    }
    const mine = this.byKey.get(key) ?? 0;
    if (this.logged < perWindow && mine < perKey) {
      this.logged += 1;
      if (this.byKey.size < MAX_KEYS || this.byKey.has(key)) this.byKey.set(key, mine + 1);
      this.log.warn(fields, message);
      return;
    }
    this.suppressed += 1;
    this.timer ??= setTimeout(
      () => {
        this.timer = undefined;
        this.log.warn({ notLogged: this.suppressed, windowMs }, summary);
        this.suppressed = 0;
      },
      this.windowStart + windowMs - now,
    ).unref();
  }
}
