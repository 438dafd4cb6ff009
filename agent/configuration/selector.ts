import type { Device, Location } from '../inventory/device.js';
import { LOCATION_FIELDS } from '../inventory/device.js';
import type { ProfileDocument, Selector } from './profileDocument.js';

/** What a selector is matched against: the device's record, its effective location and its labels. */
export interface SelectorSubject {
  protocol: Device['protocol'];
  manufacturer?: string;
  model?: string;
  /** The device's location, fields it lacks taken from the gateway's (sync.location). */
  location: Location;
  labels: Record<string, string>;
}

/**
 * `*` any run, `?` one character, case-insensitive, whole string: the
 * onboarding policy's patterns (onboarding/policy.ts, a peer this layer does not import).
 */
function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

const fits = (pattern: string, value: string | undefined): boolean => value !== undefined && globToRegExp(pattern).test(value);

/**
 * Whether a selector picks a device: every field given must match (patterns
 * with * and ?, case-insensitive, like the onboarding policy's). An empty or
 * missing selector matches nothing: such a profile reaches only the devices
 * assigned to it.
 */
export function selects(selector: Selector | undefined, s: SelectorSubject): boolean {
  if (!selector) return false;
  const checks: boolean[] = [];
  if (selector.manufacturer !== undefined) checks.push(fits(selector.manufacturer, s.manufacturer));
  if (selector.model !== undefined) checks.push(fits(selector.model, s.model));
  for (const f of LOCATION_FIELDS) if (selector.location?.[f] !== undefined) checks.push(fits(selector.location[f]!, s.location[f]));
  for (const [k, v] of Object.entries(selector.labels ?? {})) checks.push(fits(v, s.labels[k]));
  return checks.length > 0 && checks.every(Boolean);
}

/** The device as a selector sees it. */
export function subjectOf(device: Device, labels: Record<string, string>, gateway: Location): SelectorSubject {
  const location: Location = {};
  for (const f of LOCATION_FIELDS) {
    const v = device.location?.[f] || gateway[f];
    if (v) location[f] = v;
  }
  return {
    protocol: device.protocol,
    ...(device.nameplate.manufacturer ? { manufacturer: device.nameplate.manufacturer } : {}),
    ...(device.nameplate.model ? { model: device.nameplate.model } : {}),
    location,
    labels,
  };
}

/**
 * The profile a device should run when it is not pinned: of the profiles
 * of its protocol whose selector picks it, the highest priority, then the
 * first name in order.
 */
export function bestMatch<P extends Pick<ProfileDocument, 'name' | 'protocol' | 'priority' | 'selector'>>(
  profiles: readonly P[],
  s: SelectorSubject,
): P | undefined {
  let best: P | undefined;
  for (const p of profiles) {
    if (p.protocol !== s.protocol || !selects(p.selector, s)) continue;
    if (!best || p.priority > best.priority || (p.priority === best.priority && p.name < best.name)) best = p;
  }
  return best;
}
