/**
 * Process signals of a daemon: the first SIGTERM or SIGINT asks for a
 * graceful stop, a second one (an impatient operator at the terminal)
 * forces exit at once; SIGHUP asks for a reload. (systemd itself sends
 * SIGKILL after TimeoutStopSec, which needs no handling.)
 */
export class SignalHandler {
  private stopRequested = false;
  private readonly listeners: [NodeJS.Signals, () => void][] = [];

  constructor(
    private readonly deps: {
      onStop: (signal: NodeJS.Signals) => void;
      onForce: (signal: NodeJS.Signals) => void;
      onReload: () => void;
      target?: NodeJS.EventEmitter;
    },
  ) {}

  install(): void {
    const target = this.deps.target ?? process;
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const listener = () => {
        if (this.stopRequested) return this.deps.onForce(signal);
        this.stopRequested = true;
        this.deps.onStop(signal);
      };
      target.on(signal, listener);
      this.listeners.push([signal, listener]);
    }
    const hangup = () => {
      if (!this.stopRequested) this.deps.onReload();
    };
    target.on('SIGHUP', hangup);
    this.listeners.push(['SIGHUP', hangup]);
  }

  /** Marks a stop that began for another reason (a fatal error), so the next signal forces. */
  markStopping(): void {
    this.stopRequested = true;
  }

  uninstall(): void {
    const target = this.deps.target ?? process;
    for (const [signal, listener] of this.listeners) target.off(signal, listener);
    this.listeners.length = 0;
  }
}
