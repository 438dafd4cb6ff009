import type { EventBus } from '../events.js';
import type { Logger } from '../log.js';
import type { DiscoveryRun, DiscoveryRunRepository } from '../store/discoveryRunRepository.js';
import type { BrokerLink } from '../transport/types.js';
import type { MqttDiscovery } from './mqttDiscovery.js';

export interface MqttDiscoveryRunDeps {
  log: Logger;
  runs: DiscoveryRunRepository;
  discovery: MqttDiscovery;
  link: BrokerLink;
  bus: EventBus;
}

/**
 * How long an on-demand run listens for the retained announcements an
 * external broker sends again on a new subscription. Retained messages
 * come at once after the SUBSCRIBE; two seconds leaves room for a broker
 * holding thousands. The embedded broker is read directly.
 */
export const RETAINED_LISTEN_MS = 2_000;

/**
 * An on-demand MQTT discovery run. Announcements are recorded as they
 * arrive, all the time; a run reads again the retained ones (Homie device
 * attributes, Home Assistant discovery configs) from the broker, records
 * each, and reports every device announced as a target of the run.
 * Sparkplug births are not retained: those nodes are recorded when they
 * publish their birth.
 */
export class MqttDiscoveryRuns {
  constructor(private readonly deps: MqttDiscoveryRunDeps) {}

  async run(run: DiscoveryRun, stopping: AbortSignal): Promise<void> {
    const { runs, log, bus, discovery, link } = this.deps;
    const counts = { total: 0, done: 0, found: 0, errors: 0 };
    const progress = (phase: 'listing' | 'probing' | 'done' | 'failed' | 'cancelled') =>
      bus.emit('discovery.progress', { runId: run.id, protocol: 'mqtt', phase, ...counts });
    const cancelledBy = () => runs.cancelledBy(run.id);
    if (cancelledBy()) {
      runs.finish(run.id, 'failed', `cancelled by ${cancelledBy()}`);
      return progress('cancelled');
    }
    runs.start(run.id, 0);
    log.info({ run: run.id, trigger: run.trigger, actor: run.actor }, 'MQTT discovery started');
    progress('listing');
    try {
      const messages = await link.retained(discovery.filters(), RETAINED_LISTEN_MS);
      if (stopping.aborted) return runs.requeue(run.id);
      const devices = new Map<string, string>();
      for (const m of messages) {
        const id = discovery.receive(m);
        if (id && !devices.has(id)) devices.set(id, m.topic);
      }
      runs.addTargets(run.id, devices.size);
      counts.total = devices.size;
      for (const [deviceId, topic] of devices) {
        if (cancelledBy()) break;
        runs.target(run.id, { target: deviceId, source: 'announcement', status: 'found', deviceId, detail: `retained announcement on ${topic.slice(0, 200)}` });
        counts.done += 1;
        counts.found += 1;
        progress('probing');
      }
      if (cancelledBy()) {
        runs.finish(run.id, 'failed', `cancelled by ${cancelledBy()}`);
        return progress('cancelled');
      }
      runs.finish(run.id, 'done');
      progress('done');
      log.info({ run: run.id, ...counts }, 'MQTT discovery done');
    } catch (err) {
      runs.finish(run.id, 'failed', (err as Error).message);
      progress('failed');
      log.error({ err, run: run.id }, 'MQTT discovery failed');
    }
  }
}
