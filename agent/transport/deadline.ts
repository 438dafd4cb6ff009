import { TimeoutError } from '../errors.js';

/** A contact with an address or server that did not end in the time it was given. */
export class ProbeTimeout extends TimeoutError {}

/**
 * One time budget shared by every phase of a contact with one address or
 * server (a TCP connect, the OPC UA hello, the secure channel, each
 * request): each phase gets what the phases before it left, so the whole
 * contact costs at most `budgetMs`, however it fails. `leftMs` starts it
 * with less (a scanned address whose TCP connect already took part of it).
 * Its timers are plain setTimeout, so that tests can drive them with fake
 * timers.
 */
export class Deadline {
  readonly at: number;

  constructor(
    /** The budget as configured, for messages. */
    readonly budgetMs: number,
    leftMs: number = budgetMs,
  ) {
    this.at = Date.now() + Math.max(0, leftMs);
  }

  static of(budget: number | Deadline): Deadline {
    return typeof budget === 'number' ? new Deadline(budget) : budget;
  }

  remaining(): number {
    return Math.max(0, this.at - Date.now());
  }

  /** `promise`, or a ProbeTimeout ("<what>: no answer within <budgetMs> ms") once the deadline passes. */
  async within<T>(promise: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        promise,
        new Promise<never>(
          (_, reject) => (timer = setTimeout(() => reject(new ProbeTimeout(`${what}: no answer within ${this.budgetMs} ms`)), this.remaining())),
        ),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}
