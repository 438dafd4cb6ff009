import type { Store } from './database.js';

export type RunTrigger = 'start' | 'interval' | 'technician';
export type RunStatus = 'requested' | 'running' | 'done' | 'failed';
export type TargetSource = 'endpoint' | 'lds' | 'scan' | 'mdns' | 'announcement';

/** What a technician asked a run to look at: OPC UA endpoint URLs and CIDR ranges (none: what the configuration names). */
export interface RunRequest {
  targets: string[];
}
export type TargetStatus = 'found' | 'nothing' | 'error' | 'skipped';

export interface DiscoveryRun {
  id: number;
  protocol: 'opcua' | 'mqtt';
  trigger: RunTrigger;
  actor: string;
  status: RunStatus;
  requestedAt: Date;
  startedAt?: Date;
  finishedAt?: Date;
  targetsTotal: number;
  targetsDone: number;
  found: number;
  errors: number;
  error?: string;
  request?: RunRequest;
  /** Who cancelled it (the run then ends as failed). */
  cancelledBy?: string;
}

export interface DiscoveryTarget {
  target: string;
  source: TargetSource;
  status: TargetStatus;
  detail?: string;
  deviceId?: string;
  at: Date;
}

interface RunRow {
  id: number;
  protocol: 'opcua' | 'mqtt';
  trigger: RunTrigger;
  actor: string;
  status: RunStatus;
  requested_at: string;
  started_at: string | null;
  finished_at: string | null;
  targets_total: number;
  targets_done: number;
  found: number;
  errors: number;
  error: string | null;
  request: string | null;
  cancelled_by: string | null;
}

const toRun = (r: RunRow): DiscoveryRun => ({
  id: r.id,
  protocol: r.protocol,
  trigger: r.trigger,
  actor: r.actor,
  status: r.status,
  requestedAt: new Date(r.requested_at),
  ...(r.started_at ? { startedAt: new Date(r.started_at) } : {}),
  ...(r.finished_at ? { finishedAt: new Date(r.finished_at) } : {}),
  targetsTotal: r.targets_total,
  targetsDone: r.targets_done,
  found: r.found,
  errors: r.errors,
  ...(r.error ? { error: r.error } : {}),
  ...(r.request ? { request: JSON.parse(r.request) as RunRequest } : {}),
  ...(r.cancelled_by ? { cancelledBy: r.cancelled_by } : {}),
});

/** Discovery runs and their targets. Progress is written as it happens, so a run in progress can be followed from another process. */
export class DiscoveryRunRepository {
  constructor(private readonly store: Store) {}

  request(protocol: 'opcua' | 'mqtt', trigger: RunTrigger, actor: string, ask?: RunRequest): DiscoveryRun {
    const info = this.store
      .statement(`INSERT INTO discovery_runs (protocol, trigger, actor, status, requested_at, request) VALUES (?, ?, ?, 'requested', ?, ?)`)
      .run(protocol, trigger, actor, new Date().toISOString(), ask ? JSON.stringify(ask) : null);
    return this.get(Number(info.lastInsertRowid))!;
  }

  /**
   * Cancels a run: one still waiting ends at once; a running one is told to
   * stop (it starts no new target and ends as failed). False when the run
   * has already ended.
   */
  cancel(id: number, actor: string): boolean {
    const now = new Date().toISOString();
    const waiting = this.store
      .statement(`UPDATE discovery_runs SET status = 'failed', finished_at = ?, cancelled_by = ?, error = ? WHERE id = ? AND status = 'requested'`)
      .run(now, actor, `cancelled by ${actor}`, id);
    if (waiting.changes > 0) return true;
    return (
      this.store.statement(`UPDATE discovery_runs SET cancelled_by = ? WHERE id = ? AND status = 'running' AND cancelled_by IS NULL`).run(actor, id).changes > 0
    );
  }

  /** Who cancelled a running run, if anyone has. */
  cancelledBy(id: number): string | undefined {
    return (
      (this.store.statement('SELECT cancelled_by FROM discovery_runs WHERE id = ?').get(id) as { cancelled_by: string | null } | undefined)?.cancelled_by ??
      undefined
    );
  }

  /** Runs of both protocols, newest first; `actor`: only the runs that user asked for. */
  page(limit: number, offset: number, actor?: string): { total: number; items: DiscoveryRun[] } {
    const where = 'WHERE (? IS NULL OR actor = ?)';
    const total = (this.store.statement(`SELECT count(*) AS n FROM discovery_runs ${where}`).get(actor ?? null, actor ?? null) as { n: number }).n;
    const rows = this.store
      .statement(`SELECT * FROM discovery_runs ${where} ORDER BY id DESC LIMIT ? OFFSET ?`)
      .all(actor ?? null, actor ?? null, limit, offset);
    return { total, items: (rows as RunRow[]).map(toRun) };
  }

  get(id: number): DiscoveryRun | undefined {
    const row = this.store.statement('SELECT * FROM discovery_runs WHERE id = ?').get(id) as RunRow | undefined;
    return row ? toRun(row) : undefined;
  }

  list(limit = 20): DiscoveryRun[] {
    return (this.store.statement('SELECT * FROM discovery_runs ORDER BY id DESC LIMIT ?').all(limit) as RunRow[]).map(toRun);
  }

  /** How many runs wait or run now (of `actor` only, when given). */
  activeCount(actor?: string): number {
    return (
      this.store
        .statement(`SELECT count(*) AS n FROM discovery_runs WHERE status IN ('requested', 'running') AND (@actor IS NULL OR actor = @actor)`)
        .get({ actor: actor ?? null }) as { n: number }
    ).n;
  }

  /** Runs waiting to start, oldest first; a run left `running` by a crash is taken up again. */
  open(protocol: 'opcua' | 'mqtt'): DiscoveryRun[] {
    return (
      this.store.statement(`SELECT * FROM discovery_runs WHERE protocol = ? AND status IN ('requested', 'running') ORDER BY id`).all(protocol) as RunRow[]
    ).map(toRun);
  }

  start(id: number, targetsTotal: number): void {
    this.store
      .statement(`UPDATE discovery_runs SET status = 'running', started_at = ?, targets_total = ?, targets_done = 0, found = 0, errors = 0 WHERE id = ?`)
      .run(new Date().toISOString(), targetsTotal, id);
    this.store.statement('DELETE FROM discovery_targets WHERE run_id = ?').run(id);
  }

  addTargets(id: number, more: number): void {
    this.store.statement('UPDATE discovery_runs SET targets_total = targets_total + ? WHERE id = ?').run(more, id);
  }

  target(id: number, t: Omit<DiscoveryTarget, 'at'>): void {
    this.store
      .statement('INSERT OR REPLACE INTO discovery_targets (run_id, target, source, status, detail, device_id, at) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(id, t.target, t.source, t.status, t.detail ?? null, t.deviceId ?? null, new Date().toISOString());
    this.store
      .statement('UPDATE discovery_runs SET targets_done = targets_done + 1, found = found + ?, errors = errors + ? WHERE id = ?')
      .run(t.status === 'found' ? 1 : 0, t.status === 'error' ? 1 : 0, id);
  }

  targets(id: number): DiscoveryTarget[] {
    const rows = this.store.statement('SELECT * FROM discovery_targets WHERE run_id = ? ORDER BY at, target').all(id) as {
      target: string;
      source: TargetSource;
      status: TargetStatus;
      detail: string | null;
      device_id: string | null;
      at: string;
    }[];
    return rows.map((r) => ({
      target: r.target,
      source: r.source,
      status: r.status,
      ...(r.detail ? { detail: r.detail } : {}),
      ...(r.device_id ? { deviceId: r.device_id } : {}),
      at: new Date(r.at),
    }));
  }

  /** A run cut short by a stop: waiting again, to be run from the start. */
  requeue(id: number): void {
    this.store.statement(`UPDATE discovery_runs SET status = 'requested', started_at = NULL WHERE id = ?`).run(id);
  }

  /** Keeps the latest `keep` finished runs of a protocol and their targets. */
  prune(protocol: 'opcua' | 'mqtt', keep: number): void {
    const old = `SELECT id FROM discovery_runs WHERE protocol = ? AND status IN ('done', 'failed') ORDER BY id DESC LIMIT -1 OFFSET ?`;
    this.store.db.transaction(() => {
      this.store.statement(`DELETE FROM discovery_targets WHERE run_id IN (${old})`).run(protocol, keep);
      this.store.statement(`DELETE FROM discovery_runs WHERE id IN (${old})`).run(protocol, keep);
    })();
  }

  finish(id: number, status: 'done' | 'failed', error?: string): void {
    this.store
      .statement('UPDATE discovery_runs SET status = ?, finished_at = ?, error = ? WHERE id = ?')
      .run(status, new Date().toISOString(), error ?? null, id);
  }
}
