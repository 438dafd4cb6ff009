import type { Logger } from '../log.js';
import type { Service } from '../lifecycle/service.js';
import { Store, type StoreOptions } from './database.js';
import { InternalError } from '../errors.js';

/**
 * Opens the database first and closes it last. The composition root
 * (app.ts) reads `store` once this has started and builds every service
 * over it; no service holds this one.
 */
export class StoreService implements Service {
  readonly name = 'store';
  private current: Store | undefined;

  constructor(private readonly deps: { log: Logger; options: StoreOptions }) {}

  async start(): Promise<void> {
    const { store, migration } = Store.open(this.deps.options, this.deps.log);
    this.current = store;
    this.deps.log.info({ path: store.path, schemaVersion: migration.to, migrated: migration.applied.length > 0 }, 'database open');
  }

  get store(): Store {
    if (!this.current?.open) throw new InternalError('the store is not open');
    return this.current;
  }

  async stop(): Promise<void> {
    this.current?.close();
    this.current = undefined;
  }
}
