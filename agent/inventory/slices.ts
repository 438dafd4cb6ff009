import type { Device } from './device.js';

/** Devices are read this many at a time when the whole inventory is walked. */
export const INVENTORY_SLICE = 500;

/**
 * Every device once, read by slices: with 10,000 devices a whole list would
 * hold them all (and their garbage) at once; one slice at a time keeps the
 * daemon's memory flat. An insert ahead of the cursor shifts a device into
 * the next slice, which then skips the one already seen (rows are never
 * deleted).
 */
export function* inventoryBySlices(
  /** DeviceRepository (or a test's stand-in): every device, in its default order, `limit` from `offset`. */
  devices: { slice(filter: Record<string, never>, order: undefined, limit: number, offset: number): Device[] },
  size = INVENTORY_SLICE,
): Generator<Device> {
  const seen = new Set<string>();
  for (let offset = 0; ; offset += size) {
    const slice = devices.slice({}, undefined, size, offset);
    for (const d of slice) {
      if (seen.has(d.id)) continue;
      seen.add(d.id);
      yield d;
    }
    if (slice.length < size) return;
  }
}
