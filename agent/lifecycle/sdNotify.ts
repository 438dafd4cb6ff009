import { createRequire } from 'node:module';
import type { Logger } from '../log.js';

interface DgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, callback: (err?: Error) => void): void;
  close(): void;
  on(event: 'error', listener: (err: Error) => void): void;
}

/**
 * sd_notify(3) for Node: datagrams to $NOTIFY_SOCKET, sent from the agent's
 * own PID so the unit works with the default NotifyAccess=main (the npm
 * `systemd-notify` package spawns /usr/bin/systemd-notify, whose messages
 * come from a short-lived child and need NotifyAccess=all). Without
 * NOTIFY_SOCKET every call is a no-op, so the same code runs in a terminal,
 * in Docker and under systemd.
 */
export class SystemdNotifier {
  private socket: DgramSocket | undefined;
  private readonly path: string | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: { log: Logger; env: NodeJS.ProcessEnv }) {
    const target = deps.env.NOTIFY_SOCKET;
    if (!target) return;
    if (target.startsWith('@')) {
      // The datagram binding cannot address the abstract namespace; systemd
      // itself always hands services a filesystem path (/run/systemd/notify).
      deps.log.warn({ notifySocket: target }, 'abstract NOTIFY_SOCKET is not supported; systemd notifications are off');
      return;
    }
    this.path = target;
  }

  get enabled(): boolean {
    return this.path !== undefined;
  }

  /** Sends `KEY=VALUE` lines in one datagram. Failures are logged, never thrown. */
  send(fields: Record<string, string | number>): void {
    if (!this.path) return;
    const text = Object.entries(fields)
      .map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`)
      .join('\n');
    try {
      this.socket ??= this.open();
      const buf = Buffer.from(text);
      this.socket.send(buf, 0, buf.length, this.path, (err) => {
        if (err) this.deps.log.warn({ err: err.message }, 'systemd notification failed');
      });
    } catch (err) {
      this.deps.log.warn({ err: String(err) }, 'systemd notification failed');
    }
  }

  private open(): DgramSocket {
    // unix-dgram is CommonJS with no types; required lazily so that nothing
    // native is loaded when the agent does not run under systemd.
    const require = createRequire(import.meta.url);
    const unix = require('unix-dgram') as { createSocket(type: 'unix_dgram'): DgramSocket };
    const socket = unix.createSocket('unix_dgram');
    socket.on('error', (err) => this.deps.log.warn({ err: err.message }, 'systemd notify socket error'));
    return socket;
  }

  ready(status: string): void {
    this.send({ READY: 1, STATUS: status });
  }

  status(status: string): void {
    this.send({ STATUS: status });
  }

  /** RELOADING=1 with the monotonic timestamp systemd ≥ 253 asks for (Type=notify-reload). */
  reloading(): void {
    this.send({ RELOADING: 1, MONOTONIC_USEC: (process.hrtime.bigint() / 1000n).toString(), STATUS: 'Reloading configuration' });
  }

  stopping(status: string): void {
    this.send({ STOPPING: 1, STATUS: status });
  }

  /**
   * The ping interval systemd asks for: half of WATCHDOG_USEC, when
   * WATCHDOG_PID is unset or names this process.
   */
  watchdogIntervalMs(): number | undefined {
    const usec = Number(this.deps.env.WATCHDOG_USEC);
    const pid = this.deps.env.WATCHDOG_PID;
    if (!this.path || !Number.isFinite(usec) || usec <= 0) return undefined;
    if (pid !== undefined && pid !== '' && Number(pid) !== process.pid) return undefined;
    return Math.max(1, Math.floor(usec / 2000));
  }

  /**
   * Pings WATCHDOG=1 at half the watchdog period while `healthy()` is true.
   * The timer itself proves the event loop turns; `healthy` lets the agent
   * withhold pings when it knows it is wedged, so systemd restarts it.
   */
  startWatchdog(healthy: () => boolean): void {
    const interval = this.watchdogIntervalMs();
    if (interval === undefined || this.watchdogTimer) return;
    this.deps.log.info({ intervalMs: interval }, 'systemd watchdog enabled');
    const ping = () => {
      if (healthy()) this.send({ WATCHDOG: 1 });
      else this.deps.log.warn('watchdog ping withheld: agent not healthy');
    };
    ping();
    this.watchdogTimer = setInterval(ping, interval);
  }

  stopWatchdog(): void {
    clearInterval(this.watchdogTimer);
    this.watchdogTimer = undefined;
  }

  close(): void {
    this.stopWatchdog();
    try {
      this.socket?.close();
    } catch {
      // already closed: nothing left to release
    }
    this.socket = undefined;
  }
}
