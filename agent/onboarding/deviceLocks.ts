/**
 * One holder per device at a time: the enrollment workers, the technicians'
 * actions and the resume at start all change a device through it, so an
 * approval in flight and a revocation of the same device never interleave.
 */
export class DeviceLocks {
  private readonly tails = new Map<string, Promise<void>>();

  isBusy(name: string): boolean {
    return this.tails.has(name);
  }

  /** Runs `fn` once every earlier holder of `name` has finished. */
  async run<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(name) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.tails.set(name, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(name) === tail) this.tails.delete(name);
    }
  }
}
