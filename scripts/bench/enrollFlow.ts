import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { CaService } from '../../agent/ca/caService.js';
import { loadConfig } from '../../agent/config/load.js';
import { EventBus } from '../../agent/events.js';
import { Metrics } from '../../agent/metrics.js';
import { MqttEnrollment, type Answer } from '../../agent/onboarding/mqttEnrollment.js';
import { EnrollmentPolicy } from '../../agent/onboarding/policy.js';
import { Store } from '../../agent/store/database.js';
import { openRepositories } from '../../agent/store/repositories.js';
import type { BrokerLink, InboundMessage } from '../../agent/transport/types.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import type { BenchResult } from './result.js';

const DEVICES = 3_000;
const IN_FLIGHT = 50;
const fmt = (v: number) => Math.round(v).toLocaleString('en-US');
const cpuNow = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/**
 * The agent's own enrollment work without the network: requests handed to
 * the MQTT enrollment adapter as the broker link hands them over (topic,
 * payload), through parsing, policy (an enrollment token), the CA and the
 * durable records, to the answer serialised for publishing; 50 in flight,
 * as 50 devices asking at once. Enrollments per CPU-second of this process,
 * next to the CA's own issuance rate from the `ca` bench of the same run.
 * The difference from the `enroll` rows is what the broker connection costs
 * the agent (TLS, MQTT framing).
 */
export async function enrollFlowBench(caRate: () => { wall: number; cpu: number } | undefined): Promise<BenchResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bench-flow-'));
  try {
    const file = join(dir, 'agent.yaml');
    writeFileSync(file, ['agent:', '  id: gw-bench', `  dataDir: ${join(dir, 'data')}`, 'log:', '  level: warn', ''].join('\n'));
    const { config } = loadConfig({ file, env: {} });
    const log = pino({ level: 'silent' });
    const { store } = Store.open(config.store, log);
    const metrics = new Metrics();
    const bus = new EventBus(log);
    const repos = openRepositories(store, { deviceChanged: (deviceId) => bus.emit('device.changed', { deviceId }) });
    const ca = new CaService({ log, config: config.ca, gatewayId: 'gw-bench', certificates: repos.certificates, metrics, bus, env: {} });
    await ca.start();
    const { token } = repos.enrollments.createToken('bench', DEVICES * 3, new Date(Date.now() + 3_600_000));
    const policy = new EnrollmentPolicy(
      config.mqtt.policy,
      () => [],
      (secret) => repos.enrollments.tokenBySecret(secret),
    );
    const waiting = new Map<string, (answer: Answer) => void>();
    const link: BrokerLink = {
      subscribe: async () => undefined,
      publish: async (topic, payload) => {
        const answer = JSON.parse(payload.toString('utf8')) as Answer;
        waiting.get(topic)?.(answer);
      },
      isConnected: () => true,
      retained: async () => [],
    };
    const mqtt = { ...config.mqtt, limits: { ...config.mqtt.limits, perDeviceBurst: 3, globalPerSecond: 1_000_000, queueSize: 100_000, workers: 64 } };
    const enrollment = new MqttEnrollment({
      log,
      metrics,
      config: () => mqtt,
      store,
      devices: repos.devices,
      enrollments: repos.enrollments,
      policy: () => policy,
      ca,
      link,
      gate: { cutOff: async () => undefined, restore: async () => undefined },
      brokerUrl: () => 'mqtts://127.0.0.1:8883',
      reservedIds: () => ['gw-bench'],
    });
    const message = (id: string): InboundMessage => ({
      topic: `${mqtt.topicPrefix}/${id}/request`,
      payload: Buffer.from(
        JSON.stringify({
          requestId: `${id}-r1`,
          csr: buildCsr(SoftwareKey.generate('ec-p256'), encodeName({ commonName: id })),
          nameplate: { manufacturer: 'Bench', model: 'B-1', serialNumber: id },
          enrollmentToken: token,
        }),
      ),
    });
    const run = async (messages: InboundMessage[]) => {
      let next = 0;
      const one = async (): Promise<void> => {
        for (let m = messages[next++]; m; m = messages[next++]) {
          const topic = m.topic.replace(/request$/, 'response');
          let timer: NodeJS.Timeout | undefined;
          const answered = new Promise<Answer>((resolve, reject) => {
            waiting.set(topic, resolve);
            timer = setTimeout(() => reject(new Error(`${m.topic}: no answer within 60 s`)), 60_000);
          });
          enrollment.receive(m);
          const answer = await answered.finally(() => clearTimeout(timer));
          waiting.delete(topic);
          if (answer.status !== 'issued') throw new Error(`${m.topic}: ${answer.status} ${answer.reason ?? ''}`);
        }
      };
      await Promise.all(Array.from({ length: IN_FLIGHT }, one));
    };
    await run(Array.from({ length: 2_000 }, (_, i) => message(`warm-${i}`)));
    const messages = Array.from({ length: DEVICES }, (_, i) => message(`flow-${i}`));
    const cpu = cpuNow();
    const started = performance.now();
    await run(messages);
    const seconds = (performance.now() - started) / 1000;
    const perCpuSecond = DEVICES / (cpuNow() - cpu);
    await ca.stop();
    store.close();
    const rate = caRate();
    const wall = `${fmt(DEVICES / seconds)}/s wall`;
    const ratio = rate && (perCpuSecond / rate.cpu).toFixed(2);
    return [
      {
        name: `enroll: the agent's enrollment work without the network (${fmt(DEVICES)} requests, ${IN_FLIGHT} in flight)`,
        value: perCpuSecond,
        unit: 'enrollments per CPU-second',
        perCpuSecond,
        limit:
          rate === undefined
            ? `(run with the ca bench for the CA's rate); ${wall}`
            : `the CA alone in the same run: ${fmt(rate.cpu)} certificates per CPU-second: ratio ${ratio} (goal ≥ 0.5); ${wall}`,
      },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
