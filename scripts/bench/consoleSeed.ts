import { join } from 'node:path';
import pino from 'pino';
import { Store } from '../../agent/store/database.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import type { DeviceState, Location, Protocol } from '../../agent/inventory/device.js';

/** How many devices the console's bench and its browser tests put in the inventory. */
export const SEEDED_DEVICES = 10_000;

/** One device of the seeded inventory, as seeded: the tests compare what the console shows with this. */
export interface SeededDevice {
  id: string;
  protocol: Protocol;
  name: string;
  state: DeviceState;
  manufacturer: string;
  model: string;
  serial: string;
  assetTag?: string;
  location: Required<Location>;
  /** When it was first and last seen. */
  at: Date;
}

const MANUFACTURERS = ['Acme Sensors', 'Borealis Valves', 'Cobalt Drives', 'Delta Meters', 'Eiger Pumps', 'Fjord Controls', 'Gamma Analytics'];
const AREAS = ['Press shop', 'Paint shop', 'Assembly'];
const FIRST_SEEN = Date.UTC(2026, 9, 1);

/**
 * The i-th device of the seeded inventory: a fifth OPC UA servers, the rest
 * MQTT sensors; states, makers, models and places cycle with periods that
 * share no factor (the site changes every ten devices), so that every
 * combination of filters has members and no filter implies another; a
 * device in fifty is revoked, a third have an asset tag.
 */
export function seededDevice(i: number): SeededDevice {
  const n = String(i).padStart(5, '0');
  const protocol: Protocol = i % 5 === 0 ? 'opcua' : 'mqtt';
  const name = protocol === 'opcua' ? `urn:plant:plc-${n}` : `sensor-${n}`;
  const state: DeviceState = i % 50 === 2 ? 'revoked' : (['discovered', 'pending', 'provisioned', 'rejected'] as const)[i % 4]!;
  const manufacturer = MANUFACTURERS[i % MANUFACTURERS.length]!;
  return {
    id: `${protocol}:${name}`,
    protocol,
    name,
    state,
    manufacturer,
    model: `${manufacturer.slice(0, 2).toUpperCase()}-${100 + (i % 13)}`,
    serial: `SN-${i}`,
    ...(i % 3 === 0 ? { assetTag: `AT-${n}` } : {}),
    location: {
      site: Math.floor(i / 10) % 2 === 0 ? 'Plant North' : 'Plant South',
      area: AREAS[i % 3]!,
      line: `Line ${1 + (i % 11)}`,
      cell: `Cell ${1 + (i % 9)}`,
    },
    at: new Date(FIRST_SEEN + i * 97_000),
  };
}

/**
 * Writes `count` devices into the database of `dataDir` (made if missing) in
 * one transaction, through the repository the daemon itself writes with (so
 * each has its audit row and revision), while no daemon runs on it. Answers
 * what it wrote.
 */
export function seedInventory(dataDir: string, count = SEEDED_DEVICES): SeededDevice[] {
  const { store } = Store.open(
    { path: join(dataDir, 'edge-agent.db'), busyTimeoutMs: 5_000, journalSizeLimitBytes: 1 << 20, integrityCheck: 'off' },
    pino({ level: 'silent' }),
  );
  const devices = Array.from({ length: count }, (_, i) => seededDevice(i));
  try {
    const repo = new DeviceRepository(store);
    store.transaction(() => {
      for (const d of devices) {
        const patch = {
          nameplate: { manufacturer: d.manufacturer, model: d.model, serialNumber: d.serial },
          location: d.location,
          ...(d.assetTag ? { assetTag: d.assetTag } : {}),
        };
        const first = d.state === 'revoked' ? 'provisioned' : d.state;
        repo.apply({ protocol: d.protocol, name: d.name, to: first, cause: 'seeded', actor: 'bench', at: d.at, patch });
        if (d.state === 'revoked') repo.apply({ protocol: d.protocol, name: d.name, to: 'revoked', cause: 'seeded', actor: 'bench', at: d.at });
      }
    });
  } finally {
    store.close();
  }
  return devices;
}
