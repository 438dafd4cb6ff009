/**
 * A plant cell announced over multicast DNS, for trying and testing the
 * agent's mDNS discovery (opcua.mdns): node-opcua's Local Discovery Server
 * as shipped (LDS-ME) on 127.0.0.1:4840, and node-opcua servers on the
 * addresses given, each registered with it, so the LDS announces them as
 * _opcua-tcp._tcp services. It runs only inside a network namespace whose
 * one interface is loopback, where the multicast stays:
 *
 *   ip netns add cell && ip -n cell link set lo up multicast on && ip -n cell route add 224.0.0.0/4 dev lo
 *   ip netns exec cell node dist/scripts/simulate/opcuaMdnsScene.js 127.0.0.2 127.0.0.3
 *
 * Prints one JSON line (the LDS and the servers with their endpoint URLs)
 * once every server is registered; stops on SIGTERM or SIGINT.
 * Uses the test fixtures (development dependencies): run from a checkout.
 */
import { startLds, startOpcuaServer, type OpcuaServerHandle } from '../../test/helpers/opcuaServer.js';

const hosts = process.argv.slice(2);
if (hosts.length === 0 || hosts.includes('--help')) {
  process.stderr.write('usage: opcuaMdnsScene.js ADDRESS... (loopback addresses for the servers, inside an isolated network namespace)\n');
  process.exit(hosts.length === 0 ? 64 : 0);
}
const lds = await startLds({ multicast: true });
const servers: OpcuaServerHandle[] = [];
for (const [i, host] of hosts.entries()) {
  servers.push(await startOpcuaServer({ host, applicationUri: `urn:cell:server-${i + 1}`, applicationName: `Cell server ${i + 1}`, registerWith: lds }));
}
const scene = {
  lds: lds.endpointUrl,
  servers: servers.map((s) => ({ endpointUrl: s.endpointUrl, applicationUri: s.applicationUri, certificateThumbprint: s.certificateThumbprint })),
};
process.stdout.write(`${JSON.stringify(scene)}\n`);
const stop = async () => {
  for (const s of servers) await s.stop();
  await lds.stop();
  process.exit(0);
};
process.once('SIGTERM', () => void stop());
process.once('SIGINT', () => void stop());
