import { AgentError } from '../errors.js';
import type { loadOpcua } from './opcuaLoader.js';

type Client = InstanceType<Awaited<ReturnType<typeof loadOpcua>>['OPCUAClient']>;

/**
 * The server refused to open a secure channel, and said why with an OPC UA
 * status code (`statusName`, such as BadSecurityChecksFailed, and `status`,
 * its numeric value). Decide by `statusName`, never by the message.
 */
export class ChannelRefusedError extends AgentError {
  readonly code = 'OPCUA_CHANNEL_REFUSED' as const;
  constructor(
    message: string,
    readonly status: number,
    readonly statusName: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const POLICY_PREFIX = 'http://opcfoundation.org/UA/SecurityPolicy#';
/** ServiceFault_Encoding_DefaultBinary. */
const SERVICE_FAULT_BINARY = 397;
const isBad = (status: number) => status >>> 30 === 2;

/**
 * The status code in an ERR chunk the server sent, or undefined when the
 * chunk is not one or cannot be read. Two forms are read:
 *
 * - OPC 10000-6 7.1.2.5: `ERRF`, length, Error (StatusCode), Reason (String),
 *   what most stacks send when they refuse an OpenSecureChannel;
 * - node-opcua 2.157's servers, which send a ServiceFault inside a secure
 *   message chunk typed ERR, unencrypted: secure channel id, asymmetric
 *   security header, sequence header, then the ServiceFault whose
 *   ResponseHeader carries the status. node-opcua's own client reads that
 *   chunk as the first form, finds no status in it, and ends with "The
 *   connection may have been rejected by server", which is all it reports.
 */
export function errChunkStatus(chunk: Buffer): number | undefined {
  if (chunk.length < 16 || chunk.toString('latin1', 0, 4) !== 'ERRF') return undefined;
  let at = 12;
  const string = (): string | undefined => {
    if (at + 4 > chunk.length) return undefined;
    const length = chunk.readInt32LE(at);
    at += 4;
    if (length < 0) return '';
    if (at + length > chunk.length) return undefined;
    at += length;
    return chunk.toString('latin1', at - length, at);
  };
  const policy = string();
  if (policy === undefined || !policy.startsWith(POLICY_PREFIX)) {
    const status = chunk.readUInt32LE(8);
    return isBad(status) ? status : undefined;
  }
  // Sender certificate and receiver thumbprint (ByteStrings), then SequenceNumber and RequestId.
  if (string() === undefined || string() === undefined) return undefined;
  at += 8;
  if (at + 1 > chunk.length) return undefined;
  const encoding = chunk[at]!;
  let id: number;
  if (encoding === 0x01 && at + 4 <= chunk.length && chunk[at + 1] === 0) {
    id = chunk.readUInt16LE(at + 2);
    at += 4;
  } else if (encoding === 0x02 && at + 7 <= chunk.length && chunk.readUInt16LE(at + 1) === 0) {
    id = chunk.readUInt32LE(at + 3);
    at += 7;
  } else return undefined;
  // ResponseHeader: Timestamp (DateTime), RequestHandle (UInt32), ServiceResult (StatusCode).
  if (id !== SERVICE_FAULT_BINARY || at + 16 > chunk.length) return undefined;
  const status = chunk.readUInt32LE(at + 12);
  return isBad(status) ? status : undefined;
}

interface ChannelEvents {
  on(event: 'receive_chunk', handler: (chunk: Buffer) => void): unknown;
  on(event: 'message', handler: (response: { schema?: { name?: string }; responseHeader?: { serviceResult?: { value?: number } } }) => void): unknown;
}

/**
 * Watches the secure channels `client` opens for the server's refusal of
 * one: an ERR chunk (see errChunkStatus), or a ServiceFault answering the
 * OpenSecureChannel request. Returns what it saw last, as a status code and
 * its name; undefined when the server said nothing of the kind.
 */
export function watchRefusal(opcua: Awaited<ReturnType<typeof loadOpcua>>, client: Client): () => { status: number; statusName: string } | undefined {
  let seen: number | undefined;
  // 'secure_channel_created' hands over each ClientSecureChannelLayer before it sends OpenSecureChannel.
  (client as unknown as { on(event: 'secure_channel_created', handler: (channel: ChannelEvents) => void): unknown }).on('secure_channel_created', (channel) => {
    channel.on('receive_chunk', (chunk) => {
      seen = errChunkStatus(chunk) ?? seen;
    });
    channel.on('message', (response) => {
      const value = response.schema?.name === 'ServiceFault' ? response.responseHeader?.serviceResult?.value : undefined;
      if (value !== undefined && isBad(value)) seen = value;
    });
  });
  return () => {
    if (seen === undefined) return undefined;
    const status = seen;
    const name = Object.values(opcua.StatusCodes).find((s) => s.value === status)?.name;
    return { status, statusName: name ?? `0x${status.toString(16).padStart(8, '0')}` };
  };
}
