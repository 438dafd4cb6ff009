import mqtt from 'mqtt';
const N = 2000;
const tls = process.argv[2] === 'tls';
const url = tls ? 'mqtts://127.0.0.1:18832' : 'mqtt://127.0.0.1:18831';
const opts = { protocolVersion: 5, ca: tls ? (await import('node:fs')).readFileSync('/tmp/nullagent/cert.pem') : undefined, rejectUnauthorized: true };
const agent = await mqtt.connectAsync(url, { ...opts, clientId: 'agent', clean: false, properties: { sessionExpiryInterval: 3600 } });
await agent.subscribeAsync('prov/+/request', { qos: 1 });
const answer = Buffer.alloc(2600, 'a');
let answered = 0; let done;
const finished = new Promise(r => done = r);
agent.on('message', (topic) => {
  const id = topic.split('/')[1];
  agent.publishAsync(`prov/${id}/response`, answer, { qos: 1 }).then(() => { if (++answered === N) done(); });
});
await agent.endAsync();
const pub = await mqtt.connectAsync(url, { ...opts, clientId: 'pub' });
const req = Buffer.alloc(900, 'r');
await Promise.all(Array.from({ length: N }, (_, i) => pub.publishAsync(`prov/d${i}/request`, req, { qos: 1 })));
const c0 = process.cpuUsage(); const t0 = performance.now();
const agent2 = await mqtt.connectAsync(url, { ...opts, clientId: 'agent', clean: false, properties: { sessionExpiryInterval: 3600 } });
agent2.on('message', (topic) => {
  const id = topic.split('/')[1];
  agent2.publishAsync(`prov/${id}/response`, answer, { qos: 1 }).then(() => { if (++answered === N) done(); });
});
await finished;
const c = process.cpuUsage(c0);
console.log(tls ? 'tls' : 'tcp', 'null agent:', ((c.user + c.system) / N).toFixed(0), 'us CPU per request+answer (sys', (c.system / N).toFixed(0), ')', ((performance.now() - t0)).toFixed(0), 'ms');
await agent2.endAsync(); await pub.endAsync();
