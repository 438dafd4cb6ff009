import type { Config } from '../config/schema.js';

/**
 * A long-lived part of the agent. The constructor only stores dependencies;
 * I/O starts in `start()`. `start` resolves once the part is ready to serve;
 * the signal is aborted when the agent gives up on the start (timeout or
 * shutdown), and the part should then return promptly. `stop` releases
 * everything `start` took and must be safe to call after a failed start.
 */
export interface Service {
  readonly name: string;
  start(signal: AbortSignal): Promise<void>;
  stop(): Promise<void>;
  /**
   * Applies a new configuration whose changes are all live-changeable: the
   * part takes its own slice of it (the one it was built with). Omitted by
   * parts with nothing to change live.
   */
  reload?(config: Config): void | Promise<void>;
  /** Overrides of lifecycle.startTimeoutMs / stopTimeoutMs for a part that needs longer (or shorter). */
  readonly timeouts?: { startMs?: number; stopMs?: number };
}

export type ServiceState = 'idle' | 'starting' | 'up' | 'stopping' | 'stopped' | 'failed';
