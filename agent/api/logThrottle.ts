import type { Logger } from '../log.js';

/**
 * At most `perWindow` lines every `windowMs` for one kind of event that an
 * outsider can cause at will (failed logins): the log stays readable and
 * small under a flood. What was left out is counted and said in one line
 * when the window ends.
 */
export class LogThrottle {
  private windowStart = 0;
  private logged = 0;
  private suppressed = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    private readonly perWindow: number,
    private readonly windowMs: number,
  ) {}

  warn(fields: Record<string, unknown>, message: string, summary: string): void {
    const now = Date.now();
    if (now - this.windowStart >= this.windowMs) {
      this.windowStart = now;
      this.logged = 0;
    }
    if (this.logged < this.perWindow) {
      this.logged += 1;
      this.log.warn(fields, message);
      return;
    }
    this.suppressed += 1;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.log.warn({ notLogged: this.suppressed, windowMs: this.windowMs }, summary);
      this.suppressed = 0;
    }, this.windowStart + this.windowMs - now).unref();
  }
}
