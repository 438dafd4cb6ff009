import sparkplugPayload from 'sparkplug-payload';
import type { Nameplate } from '../inventory/device.js';
import { InternalError } from '../errors.js';

/*
 * The one place that touches the sparkplug-payload library: its types (Long,
 * protobufjs readers) stop here, the rest of discovery sees SparkplugFacts.
 * The package is CommonJS; under NodeNext its default import is the
 * `module.exports` object, which carries `get(namespace)`.
 */
type Codec = NonNullable<ReturnType<typeof sparkplugPayload.get>>;
type Metric = NonNullable<ReturnType<Codec['decodePayload']>['metrics']>[number];

const codec: Codec = (() => {
  const found = sparkplugPayload.get('spBv1.0');
  if (found === null) throw new InternalError('sparkplug-payload does not provide the spBv1.0 codec');
  return found;
})();

/** What a Sparkplug B BIRTH or DEATH payload tells discovery, before text cleaning. */
export interface SparkplugFacts {
  metricCount: number;
  /** The `bdSeq` metric when it is a whole number that fits a JS number (the spec keeps it in 0..255). */
  bdSeq?: number;
  /** Raw string values of the well-known property metrics; the caller trims, strips and caps them. */
  nameplate: Partial<Record<keyof Nameplate, string>>;
}

/*
 * Nameplate metrics. Sparkplug B does not standardise them: the names below
 * are the ones the Eclipse Tahu reference examples and the Sparkplug 3.0
 * specification's sample NBIRTH use ("Properties/Hardware Make", "Properties/
 * Hardware Model", "Properties/OS", "Properties/OS Version", "Properties/FW"),
 * plus the spelled-out forms some edge nodes publish. Matching ignores case.
 * Within one field the first listed name wins whatever the metric order, so a
 * real firmware version beats the operating-system version. "Properties/OS"
 * (the OS name, e.g. "Raspbian") is not a version and is not mapped.
 */
const NAMEPLATE_METRICS: ReadonlyArray<readonly [keyof Nameplate, readonly string[]]> = [
  ['manufacturer', ['properties/hardware make', 'properties/manufacturer']],
  ['model', ['properties/hardware model', 'properties/model']],
  ['serialNumber', ['properties/serial number', 'properties/serialnumber']],
  ['hardwareRevision', ['properties/hardware revision']],
  ['firmwareVersion', ['properties/fw', 'properties/firmware version', 'properties/os version']],
];

/**
 * Decodes a Sparkplug B payload. Throws whatever the decoder throws for bytes
 * that are not a Sparkplug B payload; the caller turns that into MALFORMED.
 * An empty payload is a valid, empty message (a DDEATH often is one).
 */
export function readSparkplugPayload(payload: Uint8Array): SparkplugFacts {
  const metrics: Metric[] = codec.decodePayload(payload).metrics ?? [];
  const strings = new Map<string, string>();
  let bdSeq: number | undefined;
  for (const metric of metrics) {
    if (typeof metric.name !== 'string') continue;
    // The spec names the metric exactly `bdSeq`; no case folding here.
    if (metric.name === 'bdSeq' && bdSeq === undefined) bdSeq = wholeNumber(metric.value);
    const key = metric.name.toLowerCase();
    if (typeof metric.value === 'string' && metric.value.trim() !== '' && !strings.has(key)) strings.set(key, metric.value);
  }
  const nameplate: SparkplugFacts['nameplate'] = {};
  for (const [field, names] of NAMEPLATE_METRICS) {
    const value = names.map((n) => strings.get(n)).find((v) => v !== undefined);
    if (value !== undefined) nameplate[field] = value;
  }
  return { metricCount: metrics.length, ...(bdSeq === undefined ? {} : { bdSeq }), nameplate };
}

/** A non-negative safe integer from a number or a Long (UInt64 decodes to Long); otherwise undefined. */
function wholeNumber(value: unknown): number | undefined {
  let n: unknown = value;
  if (typeof value === 'object' && value !== null && 'toNumber' in value && typeof value.toNumber === 'function') {
    n = (value.toNumber as () => unknown).call(value);
  }
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}
