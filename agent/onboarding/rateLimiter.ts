/**
 * Token buckets: one per device and one for all of them, so one chatty or
 * hostile device cannot starve the others and all of them together cannot
 * exhaust the CA. The per-device map is bounded: the least recently seen
 * device is forgotten first (it then starts with a full bucket, which is the
 * state it would have reached by waiting anyway).
 */
export class RateLimiter {
  private readonly devices = new Map<string, { tokens: number; at: number }>();
  private global: { tokens: number; at: number };

  constructor(
    private limits: { perDeviceBurst: number; perDeviceIntervalMs: number; globalPerSecond: number },
    private readonly now: () => number = () => Date.now(),
    private readonly maxDevices = 100_000,
  ) {
    this.global = { tokens: limits.globalPerSecond, at: this.now() };
  }

  setLimits(limits: { perDeviceBurst: number; perDeviceIntervalMs: number; globalPerSecond: number }): void {
    this.limits = limits;
  }

  /** 'ok', or which limit refused the request; a refused request costs no token. */
  take(device: string): 'ok' | 'device' | 'global' {
    const now = this.now();
    const { perDeviceBurst, perDeviceIntervalMs, globalPerSecond } = this.limits;
    let bucket = this.devices.get(device);
    if (bucket) {
      this.devices.delete(device);
      const refill = perDeviceIntervalMs === 0 ? perDeviceBurst : (now - bucket.at) / perDeviceIntervalMs;
      bucket = { tokens: Math.min(perDeviceBurst, bucket.tokens + refill), at: now };
    } else {
      bucket = { tokens: perDeviceBurst, at: now };
    }
    this.devices.set(device, bucket);
    if (this.devices.size > this.maxDevices) this.devices.delete(this.devices.keys().next().value!);
    if (bucket.tokens < 1) return 'device';
    this.global = { tokens: Math.min(globalPerSecond, this.global.tokens + ((now - this.global.at) * globalPerSecond) / 1000), at: now };
    if (this.global.tokens < 1) return 'global';
    bucket.tokens -= 1;
    this.global.tokens -= 1;
    return 'ok';
  }
}
