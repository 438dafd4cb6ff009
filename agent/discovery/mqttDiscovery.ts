import { Counter } from 'prom-client';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/database.js';
import type { DeviceRepository } from '../store/deviceRepository.js';
import type { InboundMessage } from '../transport/types.js';
import { AnnouncementError, ANNOUNCEMENT_FILTERS, parseAnnouncement, type Announcement } from './announcements.js';

export interface MqttDiscoveryDeps {
  log: Logger;
  metrics: Metrics;
  config: () => Config['mqtt'];
  store: Store;
  devices: DeviceRepository;
}

const SOURCE_OF_FILTER: Record<string, keyof Config['mqtt']['discovery']> = {
  spBv1: 'sparkplug',
  homie: 'homie',
  homeassistant: 'homeAssistant',
};

/**
 * Records what devices announce about themselves (Sparkplug B births and
 * deaths, Homie, Home Assistant discovery) in the inventory: a device not
 * yet known becomes `discovered`; a known one gets its presence, last seen
 * and any nameplate field it still lacks. It reports facts and decides
 * nothing: onboarding stays with the enrollment protocol.
 */
export class MqttDiscovery {
  private readonly seen: Counter<'source'>;
  private readonly refused: Counter<'code'>;

  constructor(private readonly deps: MqttDiscoveryDeps) {
    const registers = [deps.metrics.registry];
    this.seen = new Counter({
      name: 'edge_agent_discovery_announcements_total',
      help: 'Device announcements recorded, by source',
      labelNames: ['source'],
      registers,
    });
    this.refused = new Counter({
      name: 'edge_agent_discovery_refused_total',
      help: 'Announcements refused, by reason: TOO_LARGE, MALFORMED, BAD_ID',
      labelNames: ['code'],
      registers,
    });
  }

  /** The topic filters of the sources switched on in mqtt.discovery. */
  filters(): string[] {
    const on = this.deps.config().discovery;
    return ANNOUNCEMENT_FILTERS.filter((f) => on[SOURCE_OF_FILTER[f.split(/[./]/)[0]!]!]);
  }

  /** Never throws: a bad announcement is logged and counted. Returns the id of the device it is about, when recorded. */
  receive(message: InboundMessage): string | undefined {
    let announcement: Announcement | undefined;
    try {
      announcement = parseAnnouncement(message.topic, message.payload, this.deps.config().maxPayloadBytes);
    } catch (err) {
      if (!(err instanceof AnnouncementError)) throw err;
      this.refused.inc({ code: err.code });
      this.deps.log.warn({ topic: message.topic.slice(0, 200), code: err.code, reason: err.message }, 'announcement refused');
      return undefined;
    }
    if (!announcement) return undefined;
    const source = announcement.source === 'homeassistant' ? 'homeAssistant' : announcement.source;
    if (!this.deps.config().discovery[source]) return undefined;
    try {
      const id = this.record(announcement);
      this.seen.inc({ source: announcement.source });
      return id;
    } catch (err) {
      this.deps.log.error({ err, name: announcement.name }, 'announcement could not be recorded');
      return undefined;
    }
  }

  private record(a: Announcement): string {
    const devices = this.deps.devices;
    return this.deps.store.transaction(() => {
      const known = devices.byName('mqtt', a.name);
      if (known?.state === 'decommissioned') {
        devices.touch(known.id, a.online ?? known.online);
        return known.id;
      }
      const changedPresence = a.online !== undefined && known?.online !== a.online;
      // Homie sends $name and $state apart: a nameplate field the record still lacks is a change too.
      const fills =
        known !== undefined &&
        Object.entries(a.nameplate).some(([k, v]) => v !== undefined && known.nameplate[k as keyof typeof known.nameplate] === undefined);
      if (!known || changedPresence || fills || !(a.source in known.source)) {
        devices.apply({
          protocol: 'mqtt',
          name: a.name,
          to: known?.state ?? 'discovered',
          cause: known ? `${a.source} announcement: ${a.online === false ? 'offline' : 'online'}` : `announced via ${a.source}`,
          actor: 'discovery',
          details: a.details,
          patch: { fillNameplate: a.nameplate, source: { [a.source]: a.details }, ...(a.online !== undefined ? { online: a.online } : {}) },
        });
        this.deps.log.info({ name: a.name, source: a.source, online: a.online, new: !known }, 'device announcement recorded');
        return `mqtt:${a.name}`;
      }
      devices.touch(known.id, a.online ?? known.online);
      return known.id;
    });
  }
}
