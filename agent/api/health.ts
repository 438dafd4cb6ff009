import type { ServiceStatus } from '../lifecycle/runner.js';
import type { Metrics } from '../metrics.js';
import { AGENT_VERSION } from '../version.js';
import { sendJson, type HttpService } from './httpServer.js';

export interface HealthSource {
  /** `running` only between READY and the start of shutdown, outside a reload. */
  phase(): 'starting' | 'running' | 'reloading' | 'stopping';
  services(): ServiceStatus[];
}

/**
 * /healthz: the process answers (liveness). /readyz: every service is up and
 * the agent is not starting, reloading or stopping (503 otherwise, with the
 * state of each service). /metrics: Prometheus text format.
 */
export function registerHealthRoutes(http: HttpService, deps: { source: HealthSource; metrics: Metrics }): void {
  const startedAt = Date.now();
  http.route('GET', '/healthz', (_req, res) => {
    sendJson(res, 200, { status: 'ok', version: AGENT_VERSION, uptimeSeconds: Math.round((Date.now() - startedAt) / 1000) });
  });
  http.route('GET', '/readyz', (_req, res) => {
    const services = deps.source.services();
    const phase = deps.source.phase();
    const ready = phase === 'running' && services.every((s) => s.state === 'up');
    sendJson(res, ready ? 200 : 503, { status: ready ? 'ready' : 'not ready', phase, services });
  });
  http.route('GET', '/metrics', async (_req, res) => {
    const text = await deps.metrics.registry.metrics();
    res.writeHead(200, { 'content-type': deps.metrics.registry.contentType });
    res.end(text);
  });
}
