/**
 * `npm run demo`: a small plant on this machine for trying the agent. On
 * 127.0.0.1 only, on ports the kernel picks, with its state in a temporary
 * directory: the agent (embedded MQTT broker, OPC UA discovery and push, sync
 * to the CMMS), OPC UA servers with push certificate management
 * (opcuaPlant.ts), the reference CMMS receiver, and simulated MQTT sensors
 * (sensors.ts). Prints the console's address and a sign-in token, then what
 * happens; Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stops everything
 * it started and exits 0.
 */
import { execFile } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, type WriteStream } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { receiverTls, startReceiver } from '../cmms/receiverKit.js';
import { AgentLog } from './agentLog.js';
import { DEMO_GATEWAY_ID, demoConfig } from './agentConfig.js';
import { Children, type Tracked } from './children.js';
import { Narrator } from './narrator.js';
import type { PlantAnswer, PlantMessage, PlantReady } from './opcuaPlant.js';
import { AUTO_APPROVED_SERVERS } from './plant.js';
import { cmmsRecords, makeApi } from './clients.js';
import { runSensors } from './sensors.js';

const HELP = `npm run demo [-- --keep]

A demo plant on this machine: the agent with its embedded MQTT broker, OPC UA
servers with push certificate management, the reference CMMS receiver and
simulated MQTT sensors, all on 127.0.0.1. Prints the console's address and a
sign-in token. Ctrl-C stops everything.

  --keep   keep the temporary directory (configuration, database, logs) after the demo
  --help   this text
`;

const MAIN = fileURLToPath(new URL('../../agent/main.js', import.meta.url));
const PLANT = fileURLToPath(new URL('./opcuaPlant.js', import.meta.url));
/** Bounds for steps that should take seconds; a first start makes RSA keys, slow on a loaded machine. */
const READY_TIMEOUT_MS = 120_000;
const STEP_TIMEOUT_MS = 60_000;

const { values: args } = parseArgs({ options: { keep: { type: 'boolean', default: false }, help: { type: 'boolean', default: false } } });
if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const started = performance.now();
const out = (line = '') => process.stdout.write(`${line}\n`);
const say = (line: string) => out(`[${((performance.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`);

/** The environment without anything that would steer the agent (EDGE_AGENT_*) or make it talk to systemd. */
const agentEnv: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !k.startsWith('EDGE_AGENT_') && !['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID'].includes(k)),
);

const root = mkdtempSync(join(tmpdir(), 'edge-agent-demo-'));
const dataDir = join(root, 'agent');
const configFile = join(root, 'edge-agent.yaml');
const stopping = new AbortController();
let agentLog: AgentLog | undefined;
let narrator: Narrator | undefined;
let sensors: Promise<unknown> = Promise.resolve();
let shutdown: Promise<never> | undefined;
/** The OPC UA servers' and the receiver's output, closed before the directory is removed or kept. */
const logs: WriteStream[] = [];
const logFile = (name: string) => {
  const stream = createWriteStream(join(root, name), { mode: 0o600 });
  logs.push(stream);
  return stream;
};

const children = new Children((t: Tracked) => {
  say(`${t.name} exited unexpectedly (${t.exit?.code ?? t.exit?.signal}); stopping the demo`);
  for (const l of agentLog?.problems() ?? []) out(`  agent: ${String(l.msg)}${l.err ? ` ${JSON.stringify(l.err)}` : ''}`);
  void stop(1);
});

/** Stops everything this run started, removes the directory (unless --keep) and exits. A second signal kills at once. */
function stop(code: number): Promise<never> {
  if (shutdown) return shutdown;
  shutdown = (async () => {
    stopping.abort();
    narrator?.stop();
    out();
    say('stopping: the sensors, then the agent, the CMMS receiver and the OPC UA servers (Ctrl-C again kills them at once)');
    await Promise.race([sensors, new Promise((r) => setTimeout(r, 5_000))]);
    const results = await children.stopAll({ agent: 30_000 });
    await agentLog?.close();
    await Promise.all(logs.map((l) => new Promise((resolve) => l.end(resolve))));
    // Killed by the SIGTERM itself is clean too: a process still loading its modules has no handler yet.
    const unclean = results.filter((r) => r.forced || (r.exit.code !== 0 && r.exit.signal !== 'SIGTERM'));
    for (const r of unclean) say(`${r.tracked.name} (pid ${r.tracked.pid}) ${r.forced ? 'had to be killed' : `exited with ${r.exit.code ?? r.exit.signal}`}`);
    if (args.keep) say(`kept ${root} (agent log: ${join(root, 'agent.log')})`);
    else rmSync(root, { recursive: true, force: true });
    say(`stopped ${results.length} process(es)${unclean.length === 0 ? ', all cleanly' : ''}`);
    process.exit(code !== 0 ? code : unclean.length > 0 ? 1 : 0);
  })();
  return shutdown;
}
let stopAskedAt = 0;
// SIGHUP: the terminal was closed. Its output goes nowhere then, which must not stop the stopping.
process.stdout.on('error', () => {});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    if (!shutdown) {
      stopAskedAt = performance.now();
      return void stop(0);
    }
    // Under `npm run demo` one Ctrl-C comes twice: from the terminal and forwarded by npm. Only a later one is a second.
    if (performance.now() - stopAskedAt < 1_000) return;
    out('killing every process of the demo at once');
    children.killAll();
    if (!args.keep) rmSync(root, { recursive: true, force: true });
    process.exit(130);
  });
}
// A bug in the runner must not leave the processes it started behind.
for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
  process.on(event, (err: unknown) => {
    say(`the demo failed: ${(err as Error).stack ?? String(err)}`);
    void stop(1);
  });
}

/** Rejects when the demo is being stopped, so that no step waits on a process that is going away. */
const unlessStopped = <T>(p: Promise<T>): Promise<T> =>
  Promise.race([p, new Promise<never>((_, reject) => stopping.signal.addEventListener('abort', () => reject(new Error('stopped')), { once: true }))]);

const execFileAsync = promisify(execFile);

async function startPlant(password: string): Promise<{ plant: Tracked; ready: PlantReady }> {
  const dir = join(root, 'opcua');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const passwordFile = join(dir, 'secadmin.pass');
  writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
  const plant = children.spawn('OPC UA servers', process.execPath, [PLANT, '--dir', dir, '--password-file', passwordFile], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const log = logFile('opcua.log');
  plant.child.stderr!.pipe(log);
  const ready = await new Promise<PlantReady>((resolve, reject) => {
    createInterface({ input: plant.child.stdout! }).on('line', (line) => {
      log.write(`${line}\n`);
      if (line.startsWith('{"servers"')) resolve(JSON.parse(line) as PlantReady);
    });
    plant.child.once('exit', () => reject(new Error('the OPC UA servers did not start (see opcua.log)')));
  });
  return { plant, ready };
}

async function startCmms(token: string) {
  const dir = join(root, 'cmms');
  const tls = await receiverTls(dir);
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const log = logFile('cmms.log');
  const { port } = await startReceiver({
    db: join(dir, 'receiver.db'),
    tls,
    tokenFile,
    spawn: { detached: true, stderr: 'pipe' },
    onSpawn: (c) => {
      children.track('CMMS receiver', c);
      c.stderr!.pipe(log);
    },
  });
  return { port, caFile: tls.ca, tokenFile };
}

/** The agent's OPC UA client bundle (edge-agent opcua client-bundle): what a server is given to trust the agent. */
async function clientBundle(): Promise<string> {
  const bundle = join(root, 'opcua', 'client-bundle');
  await execFileAsync(process.execPath, [MAIN, 'opcua', 'client-bundle', '--out', bundle, '--config', configFile], {
    env: agentEnv,
    signal: stopping.signal,
  });
  return bundle;
}

/** Makes the servers trust the agent (its client bundle installed, as a commissioning does) and starts a discovery. */
async function commissionAndDiscover(plant: Tracked, bundle: string, api: ReturnType<typeof makeApi>): Promise<void> {
  const answer = new Promise<PlantAnswer>((resolve) => plant.child.once('message', (m: PlantAnswer) => resolve(m)));
  plant.child.send({ type: 'commission', bundle } satisfies PlantMessage);
  const a = await unlessStopped(answer);
  if (a.type === 'error') throw new Error(`commissioning the OPC UA servers failed: ${a.message}`);
  say('the OPC UA servers trust the agent now (its client bundle was installed, as at commissioning); discovery starts');
  await api.post('/api/v1/discovery/runs', { protocols: ['opcua'] });
}

/** Writes the agent's configuration: the OPC UA servers' endpoints are added by a reload once they listen. */
function writeAgentConfig(cmms: { port: number; caFile: string; tokenFile: string }, opcuaEndpoints: string[]): void {
  writeFileSync(configFile, demoConfig({ dataDir, opcuaEndpoints, securityAdminPasswordFile: join(root, 'opcua', 'secadmin.pass'), cmms }));
}

function banner(base: string, token: string, pageStatus: number): void {
  out();
  out(`Ready in ${((performance.now() - started) / 1000).toFixed(1)} s.`);
  out(`  Console:   ${base}/`);
  if (pageStatus !== 200) out(`             (this build serves no console page: GET / answered ${pageStatus}; the API and the CLI below work)`);
  out(`  Token:     ${token}`);
  out('             (sign in with "API token"; it is the first administrator\'s, from agent/admin.token)');
  out(`  CLI:       node ${relative(process.cwd(), MAIN)} devices list --config ${configFile}`);
  const processes = children.list().map((c) => `${c.name} ${c.pid}`);
  out(`  Processes: ${processes.join(', ')}`);
  out(`  Logs:      ${join(root, 'agent.log')} (JSON lines), opcua.log, cmms.log`);
  out();
  out('What happens now:');
  out('  - MQTT sensors enroll: those with an enrollment token are provisioned by policy, the vibration sensors wait for you.');
  out(`  - The OPC UA servers are discovered; those matching ${AUTO_APPROVED_SERVERS} get a certificate pushed, mixer-2 waits for you.`);
  out('  - Approve a waiting device in the console (Devices); every change is synced to the CMMS receiver.');
  out('Stop with Ctrl-C: everything the demo started stops with it.');
  out();
}

async function main(): Promise<void> {
  out('edge-agent demo plant');
  out(`  directory: ${root}${args.keep ? '' : ' (removed when the demo stops; --keep keeps it)'}`);
  say('starting the CMMS receiver and the OPC UA servers');
  const password = randomBytes(12).toString('base64url');
  const cmmsToken = randomBytes(24).toString('base64url');
  // The servers take seconds (node-opcua loads slowly): the agent starts meanwhile and learns of them by a reload.
  const plantStarting = startPlant(password);
  plantStarting.catch(() => {});
  const cmms = await unlessStopped(startCmms(cmmsToken));
  writeAgentConfig(cmms, []);

  say('starting the agent (its first start makes the gateway CA)');
  const agent = children.spawn('agent', process.execPath, [MAIN, 'run', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'], env: agentEnv });
  const log = new AgentLog(join(root, 'agent.log'), agent.child.stdout!, agent.child.stderr!);
  agentLog = log;
  await unlessStopped(log.waitFor((l) => l.msg === 'edge-agent ready', 'readiness', READY_TIMEOUT_MS));
  const http = await log.waitFor((l) => l.msg === 'http listening', 'http listener', STEP_TIMEOUT_MS);
  const broker = await log.waitFor((l) => l.msg === 'broker listening', 'MQTT broker', STEP_TIMEOUT_MS);
  const base = `http://127.0.0.1:${String(http.port)}`;
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const api = makeApi(base, token);
  const page = await fetch(`${base}/`).then(
    (r) => (void r.body?.cancel(), r.status),
    () => 0,
  );
  banner(base, token, page);

  // Made while the servers still start: it needs only the CA.
  const bundle = clientBundle();
  bundle.catch(() => {});
  const caFile = join(root, 'ca-chain.pem');
  writeFileSync(caFile, await api.text('/ca/chain'));
  const enrollment = await api.post<{ token: string }>('/api/v1/enrollment-tokens', { label: 'demo sensors', uses: 50, expiresInSeconds: 86_400 });
  narrator = new Narrator({
    api: api.get,
    cmmsRecords: () => cmmsRecords({ ...cmms, token: cmmsToken, gatewayId: DEMO_GATEWAY_ID }),
    print: say,
    intervalMs: 1_000,
  });
  narrator.start();
  sensors = runSensors({
    provisioningUrl: `mqtts://127.0.0.1:${String(broker.provisioningPort)}`,
    caFile,
    token: enrollment.token,
    signal: stopping.signal,
  }).catch((err: Error) => say(`the sensors stopped: ${err.message}`));

  const { plant, ready } = await unlessStopped(plantStarting);
  say(`the OPC UA servers listen: ${ready.servers.map((s) => `${s.name} ${s.endpointUrl}`).join(', ')}`);
  const endpoints = ready.servers.map((s) => s.endpointUrl);
  writeAgentConfig(cmms, endpoints);
  process.kill(agent.pid, 'SIGHUP');
  const reload = await unlessStopped(log.waitFor((l) => /^(configuration reloaded|reload)/.test(String(l.msg)), 'reload', STEP_TIMEOUT_MS));
  if (reload.msg !== 'configuration reloaded') throw new Error(`the agent did not take the OPC UA endpoints: ${String(reload.msg)}`);
  say('the agent reloaded its configuration (SIGHUP) with their endpoints');
  await commissionAndDiscover(plant, await unlessStopped(bundle), api);
}

main().catch((err: Error) => {
  if (shutdown) return;
  say(`the demo could not start: ${err.message}`);
  for (const l of agentLog?.problems() ?? []) out(`  agent: ${String(l.msg)}`);
  void stop(1);
});
