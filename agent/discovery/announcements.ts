import { DEVICE_ID_PATTERN } from '../../certs/profiles/deviceId.js';
import { AgentError } from '../errors.js';
import { readSparkplugPayload } from './sparkplug.js';
import type { Nameplate } from '../inventory/device.js';

/**
 * Pure parsers of the MQTT messages by which devices announce themselves:
 * Sparkplug B births and deaths, Homie `$state`/`$name`, Home Assistant MQTT
 * discovery configs. No I/O: the transport hands in a topic and a payload,
 * these functions report what the message states and decide nothing.
 */

/** The topic filters the agent subscribes to for announcements. */
export const ANNOUNCEMENT_FILTERS: string[] = [
  'spBv1.0/+/NBIRTH/+',
  'spBv1.0/+/NDEATH/+',
  'spBv1.0/+/DBIRTH/+/+',
  'spBv1.0/+/DDEATH/+/+',
  'homie/+/$state',
  'homie/+/$name',
  'homeassistant/+/+/config',
  // Home Assistant allows an optional node_id level before the object_id.
  'homeassistant/+/+/+/config',
];

/** What a device states about itself, as the inventory keeps it; keys are omitted when unknown. */
export type { Nameplate };

export interface Announcement {
  source: 'sparkplug' | 'homie' | 'homeassistant';
  /**
   * Inventory name, always matching DEVICE_ID_PATTERN. Sparkplug node: the
   * edge node id; Sparkplug device: `${edgeNodeId}.${deviceId}`; Homie: the
   * device id; Home Assistant: the node_id level of the topic, else the
   * object_id (the level a broker ACL ties to the publisher; identifiers from
   * the payload are kept in `details` only).
   * Names are unique within a source, not across sources, and not across
   * Sparkplug groups (the group is in `details`).
   */
  name: string;
  /**
   * Presence: true for a Sparkplug BIRTH, Homie `$state` init|ready|sleeping|alert
   * and a Home Assistant config; false for a Sparkplug DEATH, Homie
   * disconnected|lost or an emptied `$state`, and an empty Home Assistant
   * config (entity removed). Absent means "no change": Homie `$name` says
   * nothing about presence.
   */
  online?: boolean;
  nameplate: Nameplate;
  /**
   * Where it was seen, small and JSON-serialisable:
   * `{ protocol: 'sparkplug', message, group, edgeNode, device?, bdSeq?, metrics? }`,
   * `{ protocol: 'homie', topic, state? }`,
   * `{ protocol: 'homeassistant', component, nodeId?, objectId }`.
   */
  details: Record<string, string | number | boolean>;
}

export type AnnouncementErrorCode = 'TOO_LARGE' | 'MALFORMED' | 'BAD_ID';

/** A message on an announcement topic whose payload or topic ids cannot be used. */
export class AnnouncementError extends AgentError {
  readonly code: AnnouncementErrorCode;
  constructor(code: AnnouncementErrorCode, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options);
    this.code = code;
  }
}

/** Longest text kept from a payload; longer values are cut, not refused. */
export const MAX_TEXT_LENGTH = 128;

/**
 * Parses one announcement. Returns undefined when the topic is not one of
 * ANNOUNCEMENT_FILTERS. Otherwise checks, in order: payload size (TOO_LARGE),
 * the ids in the topic (BAD_ID), the payload (MALFORMED).
 */
export function parseAnnouncement(topic: string, payload: Buffer, maxPayloadBytes = 65536): Announcement | undefined {
  const levels = topic.split('/');
  const parse = matchTopic(levels);
  if (parse === undefined) return undefined;
  if (payload.length > maxPayloadBytes) {
    throw new AnnouncementError('TOO_LARGE', `announcement payload of ${payload.length} bytes exceeds the ${maxPayloadBytes}-byte limit`, {
      details: { topic: shorten(topic), bytes: payload.length, limit: maxPayloadBytes },
    });
  }
  return parse(levels, payload, topic);
}

type Parser = (levels: string[], payload: Buffer, topic: string) => Announcement;

function matchTopic(levels: string[]): Parser | undefined {
  const [root, , third] = levels;
  if (root === 'spBv1.0') {
    if (levels.length === 4 && (third === 'NBIRTH' || third === 'NDEATH')) return parseSparkplug;
    if (levels.length === 5 && (third === 'DBIRTH' || third === 'DDEATH')) return parseSparkplug;
  } else if (root === 'homie' && levels.length === 3) {
    if (third === '$state') return parseHomieState;
    if (third === '$name') return parseHomieName;
  } else if (root === 'homeassistant' && (levels.length === 4 || levels.length === 5) && levels.at(-1) === 'config') {
    return parseHomeAssistant;
  }
  return undefined;
}

// --- Sparkplug B ------------------------------------------------------------

function parseSparkplug(levels: string[], payload: Buffer, topic: string): Announcement {
  const [, group = '', message = '', edgeNode = '', device] = levels;
  if (group === '' || group.length > MAX_TEXT_LENGTH || cleanText(group) !== group) {
    throw badId(topic, 'Sparkplug group id', group, `1 to ${MAX_TEXT_LENGTH} characters, no control characters or padding`);
  }
  // A dot separates node from device in the inventory name, so neither id
  // may contain one: otherwise node "a.b" and device "b" of node "a" collide.
  sparkplugId(topic, 'Sparkplug edge node id', edgeNode);
  if (device !== undefined) sparkplugId(topic, 'Sparkplug device id', device);
  const name = device === undefined ? edgeNode : `${edgeNode}.${device}`;
  if (!DEVICE_ID_PATTERN.test(name)) throw badId(topic, 'Sparkplug inventory name', name, INVENTORY_RULE);

  let facts;
  try {
    facts = readSparkplugPayload(payload);
  } catch (err) {
    throw new AnnouncementError('MALFORMED', `${message} payload is not a Sparkplug B protobuf message`, {
      cause: err,
      details: { topic: shorten(topic) },
    });
  }
  const birth = message.endsWith('BIRTH');
  const details: Announcement['details'] = { protocol: 'sparkplug', message, group, edgeNode };
  if (device !== undefined) details.device = device;
  if (facts.bdSeq !== undefined) details.bdSeq = facts.bdSeq;
  if (birth) details.metrics = facts.metricCount;
  const nameplate: Nameplate = {};
  // A death certificate states nothing about the device itself.
  if (birth) {
    for (const [field, raw] of Object.entries(facts.nameplate) as [keyof Nameplate, string][]) {
      const text = cleanText(raw);
      if (text !== undefined) nameplate[field] = text;
    }
  }
  return { source: 'sparkplug', name, online: birth, nameplate, details };
}

function sparkplugId(topic: string, what: string, id: string): void {
  if (!DEVICE_ID_PATTERN.test(id) || id.includes('.')) throw badId(topic, what, id, '1 to 64 of A-Z a-z 0-9 _ - (no dot: it joins node and device)');
}

// --- Homie (v3, v4) -----------------------------------------------------------

/*
 * `$state` to presence. init, ready and alert are all sent while the device
 * is connected (alert = connected but needs a human), sleeping is a planned
 * pause of a device that is still there; disconnected is a clean shutdown and
 * lost is the broker's last will. An empty payload is a retained `$state`
 * being cleared, i.e. the device was removed: offline.
 */
const HOMIE_STATES: Record<string, boolean> = {
  init: true,
  ready: true,
  sleeping: true,
  alert: true,
  disconnected: false,
  lost: false,
};

function parseHomieState(levels: string[], payload: Buffer, topic: string): Announcement {
  const id = homieId(levels, topic);
  const state = utf8(payload, topic).trim();
  const details: Announcement['details'] = { protocol: 'homie', topic };
  if (state === '') return { source: 'homie', name: id, online: false, nameplate: {}, details };
  const online = Object.hasOwn(HOMIE_STATES, state) ? HOMIE_STATES[state] : undefined;
  if (online === undefined) {
    throw new AnnouncementError('MALFORMED', `Homie $state ${JSON.stringify(shorten(state, 32))} is not one of ${Object.keys(HOMIE_STATES).join(', ')}`, {
      details: { topic },
    });
  }
  details.state = state;
  return { source: 'homie', name: id, online, nameplate: {}, details };
}

function parseHomieName(levels: string[], payload: Buffer, topic: string): Announcement {
  const id = homieId(levels, topic);
  const displayName = cleanText(utf8(payload, topic));
  return {
    source: 'homie',
    name: id,
    nameplate: displayName === undefined ? {} : { displayName },
    details: { protocol: 'homie', topic },
  };
}

function homieId(levels: string[], topic: string): string {
  const id = levels[1] ?? '';
  if (!DEVICE_ID_PATTERN.test(id)) throw badId(topic, 'Homie device id', id, INVENTORY_RULE);
  return id;
}

// --- Home Assistant MQTT discovery -------------------------------------------

/** HA's own rule for node_id and object_id; the component is held to it too. */
const HA_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/*
 * Device keys in full and abbreviated form (HA expands `dev`, `mf`, `mdl`,
 * `sn`, `hw`, `sw`, `ids`); the full key wins when both are present.
 */
const HA_DEVICE_FIELDS: ReadonlyArray<readonly [keyof Nameplate, string, string | undefined]> = [
  ['manufacturer', 'manufacturer', 'mf'],
  ['model', 'model', 'mdl'],
  ['serialNumber', 'serial_number', 'sn'],
  ['hardwareRevision', 'hw_version', 'hw'],
  ['firmwareVersion', 'sw_version', 'sw'],
  ['displayName', 'name', undefined],
];

function parseHomeAssistant(levels: string[], payload: Buffer, topic: string): Announcement {
  const component = levels[1] ?? '';
  const nodeId = levels.length === 5 ? (levels[2] ?? '') : undefined;
  const objectId = levels[levels.length - 2] ?? '';
  const rule = '1 to 64 of A-Z a-z 0-9 _ -';
  if (!HA_ID_PATTERN.test(component)) throw badId(topic, 'Home Assistant component', component, rule);
  if (nodeId !== undefined && !HA_ID_PATTERN.test(nodeId)) throw badId(topic, 'Home Assistant node_id', nodeId, rule);
  if (!HA_ID_PATTERN.test(objectId)) throw badId(topic, 'Home Assistant object_id', objectId, rule);
  const details: Announcement['details'] = { protocol: 'homeassistant', component };
  if (nodeId !== undefined) details.nodeId = nodeId;
  details.objectId = objectId;

  // The name is the topic level right after the component (the node_id, or
  // the object_id when there is none): that is the level a broker's ACL ties
  // to the publisher, so a device cannot announce under another's name. The
  // payload's device.identifiers only go into the details.
  const name = nodeId ?? objectId;
  // An empty config is HA's removal of the entity.
  if (payload.length === 0) return { source: 'homeassistant', name, online: false, nameplate: {}, details };

  const config = parseJsonObject(utf8(payload, topic), topic);
  const device = asRecord(config.device) ?? asRecord(config.dev) ?? {};
  const nameplate: Nameplate = {};
  for (const [field, full, short] of HA_DEVICE_FIELDS) {
    const text = cleanText(device[full]) ?? (short === undefined ? undefined : cleanText(device[short]));
    if (text !== undefined) nameplate[field] = text;
  }
  const ids = device.identifiers ?? device.ids;
  const identifier = cleanText(Array.isArray(ids) ? (ids[0] as unknown) : ids);
  if (identifier !== undefined) details.identifier = identifier;
  return { source: 'homeassistant', name, online: true, nameplate, details };
}

// --- Payload hygiene ----------------------------------------------------------

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * JSON.parse that refuses keys able to reach an object's prototype anywhere
 * in the document, so no later merge of this data can pollute one.
 */
function parseJsonObject(text: string, topic: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text, (key, v: unknown) => {
      if (FORBIDDEN_KEYS.has(key)) throw new AnnouncementError('MALFORMED', `JSON payload has a forbidden key "${key}"`, { details: { topic } });
      return v;
    });
  } catch (err) {
    if (err instanceof AnnouncementError) throw err;
    throw new AnnouncementError('MALFORMED', 'payload is not valid JSON', { cause: err, details: { topic } });
  }
  const record = asRecord(value);
  if (record === undefined) throw new AnnouncementError('MALFORMED', 'JSON payload is not an object', { details: { topic } });
  return record;
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function utf8(payload: Buffer, topic: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(payload);
  } catch (err) {
    throw new AnnouncementError('MALFORMED', 'payload is not valid UTF-8', { cause: err, details: { topic } });
  }
}

// C0/C1 controls become spaces (they often separate words); invisible
// formatting and bidi overrides go, since names end up in the console and logs.
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/g;
const INVISIBLE_CHARS = /[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

/**
 * Text from a payload made safe to store and show: strings only (anything
 * else is undefined), controls replaced, whitespace runs collapsed, trimmed,
 * cut to MAX_TEXT_LENGTH code points; undefined when nothing is left.
 */
export function cleanText(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const text = value.replace(CONTROL_CHARS, ' ').replace(INVISIBLE_CHARS, '').replace(/\s+/g, ' ').trim();
  if (text === '') return undefined;
  const chars = Array.from(text);
  return chars.length > MAX_TEXT_LENGTH ? chars.slice(0, MAX_TEXT_LENGTH).join('').trimEnd() : text;
}

const INVENTORY_RULE = '1 to 64 of A-Z a-z 0-9 . _ -, not "." or ".."';

function badId(topic: string, what: string, id: string, rule: string): AnnouncementError {
  // JSON.stringify shows an empty id and escapes controls in the log line.
  return new AnnouncementError('BAD_ID', `${what} ${JSON.stringify(shorten(id, 80))} is not usable: ${rule}`, {
    details: { topic: shorten(topic) },
  });
}

function shorten(text: string, max = 256): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
