/**
 * The reconnect storm's bound: a bare node:tls server in its own process (as
 * the agent and Mosquitto each are one), with the broker's key and
 * certificate, asking for and verifying client certificates against the
 * gateway CA, and doing nothing after the handshake. Run by storm.ts with
 * `fork(this file, [keyFile, certFile, caFile])`; it sends its port over IPC.
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:tls';

const [keyFile, certFile, caFile] = process.argv.slice(2);
if (!process.send || !keyFile || !certFile || !caFile) {
  process.stderr.write('usage: fork(stormTlsServer.js, [keyFile, certFile, caFile]) with an IPC channel\n');
  process.exit(2);
}
const server = createServer(
  {
    key: readFileSync(keyFile),
    cert: readFileSync(certFile),
    ca: readFileSync(caFile),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    noDelay: true,
  },
  (socket) => socket.on('error', () => {}),
);
// A refused or reset handshake is the client's to retry; counting is the clients' side.
server.on('tlsClientError', () => {});
server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as AddressInfo).port }));
process.on('disconnect', () => process.exit(0));
