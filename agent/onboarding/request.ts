import { z } from 'zod';
import { AgentError } from '../errors.js';

/**
 * The enrollment request a device publishes to {prefix}/{deviceId}/request,
 * checked strictly: unknown keys, wrong types, over-long strings and
 * prototype keys (`__proto__`, `constructor`, `prototype`) at any depth
 * are refused before anything else looks at it.
 */
const text = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(/^[^\u0000-\u001f\u007f]*$/, 'must not contain control characters');

export const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

const requestSchema = z.strictObject({
  requestId: z.string().regex(REQUEST_ID_PATTERN, 'requestId must be 1 to 128 characters from A-Z a-z 0-9 . _ : -'),
  // Exactly one PEM block: the bytes a claim signs are the bytes the CA reads.
  csr: z
    .string()
    .max(8_192)
    .regex(
      /^\s*-----BEGIN CERTIFICATE REQUEST-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE REQUEST-----\s*$/,
      'csr must be one PEM block "CERTIFICATE REQUEST"',
    ),
  nameplate: z.strictObject({
    manufacturer: text(128),
    model: text(128),
    serialNumber: text(128),
    hardwareRevision: text(64).optional(),
    firmwareVersion: text(64).optional(),
  }),
  enrollmentToken: z.string().min(1).max(256).optional(),
  claim: z
    .strictObject({
      certificate: z.string().min(1).max(8_192),
      signature: z
        .string()
        .min(1)
        .max(2_048)
        .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'signature must be base64'),
    })
    .optional(),
});

export type EnrollmentRequestMessage = z.infer<typeof requestSchema>;

/** An enrollment request that cannot be read; mqttEnrollment rejects it with a reason for each code. */
export class RequestError extends AgentError {
  constructor(
    readonly code: 'NOT_JSON' | 'TOO_DEEP' | 'PROTOTYPE_KEY' | 'INVALID',
    message: string,
    /** The requestId when it could be read, so the rejection can carry it. */
    readonly requestId?: string,
  ) {
    super(message);
  }
}

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** A request is an object holding objects (nameplate, claim): 2 levels. Beyond this, parsing is refused unread. */
export const MAX_REQUEST_DEPTH = 8;

/**
 * Whether objects and arrays in `text` nest deeper than `max`, by a scan
 * that skips strings. JSON.parse with a reviver recurses once per level and
 * runs out of stack on valid JSON a few thousand levels deep, which would
 * otherwise be reported as "not valid JSON".
 */
export function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/** The requestId of a request that is not read whole (too large): only a well-formed one, else undefined. */
export function peekRequestId(payload: Buffer): string | undefined {
  const m = /"requestId"\s*:\s*"([A-Za-z0-9._:-]{1,128})"/.exec(payload.toString('latin1'));
  return m?.[1];
}

export function parseRequest(payload: Buffer): EnrollmentRequestMessage {
  let value: unknown;
  let forbidden: string | undefined;
  const text = payload.toString('utf8');
  if (nestsDeeperThan(text, MAX_REQUEST_DEPTH)) {
    throw new RequestError('TOO_DEEP', `request is nested too deeply: more than ${MAX_REQUEST_DEPTH} levels of objects and arrays`, peekRequestId(payload));
  }
  try {
    value = JSON.parse(text, (key, v: unknown) => {
      if (FORBIDDEN_KEYS.has(key)) forbidden = key;
      return v;
    });
  } catch {
    throw new RequestError('NOT_JSON', 'request is not valid JSON');
  }
  const requestId =
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { requestId?: unknown }).requestId === 'string' &&
    REQUEST_ID_PATTERN.test((value as { requestId: string }).requestId)
      ? (value as { requestId: string }).requestId
      : undefined;
  if (forbidden !== undefined) throw new RequestError('PROTOTYPE_KEY', `request contains the forbidden key ${JSON.stringify(forbidden)}`, requestId);
  const result = requestSchema.safeParse(value);
  if (!result.success) {
    const first = result.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || '(request)'}: ${i.message}`);
    throw new RequestError('INVALID', `request does not match the schema: ${first.join('; ')}`, requestId);
  }
  return result.data;
}
