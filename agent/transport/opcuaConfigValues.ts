/**
 * A profile's JSON values as OPC UA built-in types, and back. Integers must
 * be whole JSON numbers inside the type's range; Int64 and UInt64 also take
 * a decimal string (JSON numbers lose precision past 2^53) and are read back
 * as decimal strings; Float takes any finite number within float32's range
 * and is compared after rounding to float32, as the server stores it.
 */

/** The NodeId number (namespace 0) of each built-in type: the DataType attribute a bound node must have (OPC 10000-6 5.1.2). */
export const DATA_TYPE_IDS = {
  Boolean: 1,
  SByte: 2,
  Byte: 3,
  Int16: 4,
  UInt16: 5,
  Int32: 6,
  UInt32: 7,
  Int64: 8,
  UInt64: 9,
  Float: 10,
  Double: 11,
  String: 12,
} as const;

/*
 * The configuration's own shapes (agent/configuration/types.ts), restated: transport
 * imports nothing from the layers above it, and TypeScript checks the two agree where
 * the deliverer hands these on.
 */
/** A value as a profile holds it. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
/** An OPC UA built-in type a profile may bind (the configuration's OPCUA_DATA_TYPES). */
export type OpcuaDataType = keyof typeof DATA_TYPE_IDS;
/** Where a value goes: a node of the server and its data type. */
export interface OpcuaNodeBinding {
  nodeId: string;
  dataType: OpcuaDataType;
}

const INTEGER_RANGES: Partial<Record<OpcuaDataType, [bigint, bigint]>> = {
  SByte: [-128n, 127n],
  Byte: [0n, 255n],
  Int16: [-32_768n, 32_767n],
  UInt16: [0n, 65_535n],
  Int32: [-2_147_483_648n, 2_147_483_647n],
  UInt32: [0n, 4_294_967_295n],
  Int64: [-(2n ** 63n), 2n ** 63n - 1n],
  UInt64: [0n, 2n ** 64n - 1n],
};
const FLOAT_MAX = 3.4028234663852886e38;
const WIDE = new Set<OpcuaDataType>(['Int64', 'UInt64']);

/** A JSON value as an integer, or undefined when it is none (strings only for Int64/UInt64). */
function integer(type: OpcuaDataType, value: JsonValue): bigint | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? BigInt(value) : undefined;
  if (typeof value === 'string' && WIDE.has(type) && /^-?\d{1,20}$/.test(value)) return BigInt(value);
  return undefined;
}

/** Why `value` cannot be written as `type`, or undefined when it can. */
export function valueRefusal(type: OpcuaDataType, value: JsonValue): string | undefined {
  const shown = JSON.stringify(value);
  switch (type) {
    case 'Boolean':
      return typeof value === 'boolean' ? undefined : `${shown} is not a Boolean (true or false)`;
    case 'String':
      return typeof value === 'string' ? undefined : `${shown} is not a String`;
    case 'Double':
      return typeof value === 'number' && Number.isFinite(value) ? undefined : `${shown} is not a finite number (Double)`;
    case 'Float':
      if (typeof value !== 'number' || !Number.isFinite(value)) return `${shown} is not a finite number (Float)`;
      return Math.abs(value) <= FLOAT_MAX ? undefined : `${shown} is outside Float's range (±${FLOAT_MAX})`;
    default: {
      const [min, max] = INTEGER_RANGES[type]!;
      const n = integer(type, value);
      if (n === undefined) return `${shown} is not a whole number${WIDE.has(type) ? ' (or a decimal string)' : ''} (${type})`;
      return n >= min && n <= max ? undefined : `${shown} is outside ${type}'s range ${min} to ${max}`;
    }
  }
}

/** The value node-opcua's Variant takes for `type` (64-bit integers as [high, low] 32-bit words). Call only after valueRefusal passed. */
export function toWire(type: OpcuaDataType, value: JsonValue): unknown {
  if (WIDE.has(type)) {
    const u = BigInt.asUintN(64, integer(type, value)!);
    return [Number(u >> 32n), Number(u & 0xffff_ffffn)];
  }
  return value;
}

/** A value read from the server as JSON: 64-bit integers as decimal strings; anything not JSON-like as its text. */
export function fromWire(type: OpcuaDataType, raw: unknown): JsonValue {
  if (WIDE.has(type) && Array.isArray(raw) && raw.length === 2) {
    const u = (BigInt(raw[0] as number) << 32n) | BigInt(raw[1] as number);
    return (type === 'Int64' ? BigInt.asIntN(64, u) : u).toString();
  }
  if (typeof raw === 'number' || typeof raw === 'boolean' || typeof raw === 'string' || raw === null) return raw;
  if (typeof raw === 'bigint') return raw.toString();
  return raw === undefined ? null : String(raw);
}

/** Whether the server holds `expected`: Float after float32 rounding, 64-bit integers by value whatever their JSON form. */
export function sameValue(type: OpcuaDataType, expected: JsonValue, actual: JsonValue | null): boolean {
  if (actual === null) return false;
  if (type === 'Float') return typeof actual === 'number' && typeof expected === 'number' && Math.fround(expected) === Math.fround(actual);
  if (INTEGER_RANGES[type]) {
    const a = integer(type, actual);
    return a !== undefined && a === integer(type, expected);
  }
  return expected === actual;
}
