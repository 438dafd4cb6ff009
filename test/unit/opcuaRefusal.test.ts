import { describe, expect, it } from 'vitest';
import { errChunkStatus } from '../../agent/transport/opcuaRefusal.js';

/** An OPC UA TCP Error message (OPC 10000-6 7.1.2.5): what most stacks send when they refuse a secure channel. */
function errMessage(status: number, reason: string): Buffer {
  const text = Buffer.from(reason, 'utf8');
  const b = Buffer.alloc(16 + text.length);
  b.write('ERRF', 0, 'latin1');
  b.writeUInt32LE(b.length, 4);
  b.writeUInt32LE(status, 8);
  b.writeInt32LE(text.length, 12);
  text.copy(b, 16);
  return b;
}

const BAD_CERTIFICATE_UNTRUSTED = 0x801a0000;

// node-opcua's own form (a ServiceFault in a secure chunk typed ERR) is read from a real server in test/integration/opcua/pushTrust.test.ts.
describe('the status code of an ERR chunk', () => {
  it('is read from an Error message as OPC 10000-6 defines it', () => {
    expect(errChunkStatus(errMessage(BAD_CERTIFICATE_UNTRUSTED, 'certificate untrusted'))).toBe(BAD_CERTIFICATE_UNTRUSTED);
    expect(errChunkStatus(errMessage(BAD_CERTIFICATE_UNTRUSTED, ''))).toBe(BAD_CERTIFICATE_UNTRUSTED);
  });

  it('is undefined for what is not an ERR chunk, is cut short, or carries no Bad status', () => {
    const message = errMessage(BAD_CERTIFICATE_UNTRUSTED, 'x');
    expect(errChunkStatus(Buffer.concat([Buffer.from('MSGF'), message.subarray(4)]))).toBeUndefined();
    expect(errChunkStatus(message.subarray(0, 12))).toBeUndefined();
    expect(errChunkStatus(errMessage(0, 'Good'))).toBeUndefined();
    expect(errChunkStatus(errMessage(0x40000000, 'Uncertain'))).toBeUndefined();
  });

  it('is undefined for a secure chunk typed ERR whose header is cut short', () => {
    const policy = Buffer.from('http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256', 'latin1');
    const b = Buffer.alloc(16 + policy.length + 4);
    b.write('ERRF', 0, 'latin1');
    b.writeUInt32LE(b.length, 4);
    b.writeUInt32LE(3, 8);
    b.writeInt32LE(policy.length, 12);
    policy.copy(b, 16);
    b.writeInt32LE(5000, 16 + policy.length); // a certificate longer than the chunk
    expect(errChunkStatus(b)).toBeUndefined();
  });
});
