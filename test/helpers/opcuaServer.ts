/**
 * The OPC UA fixtures of the tests: the node-opcua servers live in
 * scripts/lib/ (the demo plant runs them too); the discovery server and the
 * servers that speak no OPC UA are the tests' own.
 */
export * from '../../scripts/lib/opcuaServer.js';
export { startLds, LoopbackDiscoveryServer, type LdsHandle, type LdsOptions } from './opcuaServerLds.js';
export { requireLoopback, startGarbageServer, startHangingServer, type RawTcpServer } from './opcuaServerRaw.js';
