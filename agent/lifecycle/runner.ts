import { describeError, ServiceStartError, TimeoutError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import type { Service, ServiceState } from './service.js';

export interface ServiceStatus {
  name: string;
  state: ServiceState;
  since: string;
  error?: string;
}

export interface RunnerDeps {
  log: Logger;
  services: readonly Service[];
  timeouts: { startMs: number; stopMs: number };
  /** Called on every state change (metrics, systemd STATUS). Errors are logged, not thrown. */
  onStateChange?: (name: string, state: ServiceState) => void;
}

/** Runs `work` with a deadline; on expiry aborts `controller` and rejects with a TimeoutError. */
async function withDeadline<T>(work: Promise<T>, ms: number, what: string, controller?: AbortController): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      controller?.abort(new TimeoutError(`${what} took longer than ${ms} ms`));
      reject(new TimeoutError(`${what} took longer than ${ms} ms`, { details: { timeoutMs: ms } }));
    }, ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Starts services in order and stops them in reverse, each under its own
 * timeout. If one fails to start, the ones already started (and the failed
 * one, which may hold part of what it took) are stopped before the error
 * is thrown.
 */
export class ServiceRunner {
  private readonly status = new Map<string, ServiceStatus>();
  private readonly services: Service[] = [];
  private started: Service[] = [];

  constructor(private deps: RunnerDeps) {
    this.add(deps.services);
  }

  /**
   * Appends services to start after those already given. The composition
   * root builds the services over the store once the lock and the store
   * are up, so they come in a second step; stop still runs in reverse over
   * all of them.
   */
  add(services: readonly Service[]): void {
    for (const s of services) {
      this.services.push(s);
      this.status.set(s.name, { name: s.name, state: 'idle', since: new Date().toISOString() });
    }
  }

  private set(name: string, state: ServiceState, error?: unknown): void {
    this.status.set(name, {
      name,
      state,
      since: new Date().toISOString(),
      ...(error === undefined ? {} : { error: describeError(error) }),
    });
    try {
      this.deps.onStateChange?.(name, state);
    } catch (err) {
      this.deps.log.error({ err, service: name }, 'state change handler failed');
    }
  }

  states(): ServiceStatus[] {
    return this.services.map((s) => this.status.get(s.name)!);
  }

  allUp(): boolean {
    return this.states().every((s) => s.state === 'up');
  }

  /** Starts, in order, every service not started yet. */
  async startAll(shutdown: AbortSignal): Promise<void> {
    for (const service of this.services) {
      if (this.started.includes(service)) continue;
      if (shutdown.aborted) throw new ServiceStartError('start interrupted by shutdown', { cause: shutdown.reason });
      const controller = new AbortController();
      const onShutdown = () => controller.abort(shutdown.reason);
      shutdown.addEventListener('abort', onShutdown, { once: true });
      this.set(service.name, 'starting');
      this.deps.log.info({ service: service.name }, 'starting service');
      try {
        await withDeadline(service.start(controller.signal), service.timeouts?.startMs ?? this.deps.timeouts.startMs, `start of ${service.name}`, controller);
        this.started.push(service);
        this.set(service.name, 'up');
      } catch (err) {
        this.set(service.name, 'failed', err);
        this.deps.log.error({ err, service: service.name }, 'service failed to start');
        this.started.push(service);
        await this.stopAll();
        this.set(service.name, 'failed', err);
        throw new ServiceStartError(`${service.name} failed to start`, {
          cause: err,
          details: { service: service.name },
        });
      } finally {
        shutdown.removeEventListener('abort', onShutdown);
      }
    }
  }

  /** Stops every started service in reverse order. Never throws; failures and timeouts are logged. */
  async stopAll(onStopping?: (name: string) => void): Promise<void> {
    const toStop = this.started.reverse();
    this.started = [];
    for (const service of toStop) {
      onStopping?.(service.name);
      this.set(service.name, 'stopping');
      try {
        await withDeadline(service.stop(), service.timeouts?.stopMs ?? this.deps.timeouts.stopMs, `stop of ${service.name}`);
        this.set(service.name, 'stopped');
        this.deps.log.info({ service: service.name }, 'service stopped');
      } catch (err) {
        this.set(service.name, 'failed', err);
        this.deps.log.error({ err, service: service.name }, 'service did not stop cleanly');
      }
    }
  }

  /** Hands a validated, live-changeable configuration to every running service that takes one. */
  async reloadAll(config: Config): Promise<void> {
    for (const service of this.started) {
      if (service.reload) await service.reload(config);
    }
  }

  setTimeouts(timeouts: { startMs: number; stopMs: number }): void {
    this.deps = { ...this.deps, timeouts };
  }
}
