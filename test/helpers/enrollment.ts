import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Answer } from '../../agent/onboarding/mqttEnrollment.js';
import { opensslCsr } from './openssl.js';

const exec = promisify(execFile);

/** The answer as the agent defines it: the tests read what the agent writes. */
export type { Answer };

export const PREFIX = 'edge/prov/v1';

export const NAMEPLATE = { manufacturer: 'Acme Sensors', model: 'TS-100', serialNumber: 'SN-0001' };

/** A device key and CSR made by `openssl req` (CN = the device id), and a request around it. */
export async function deviceRequest(dir: string, name: string, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const csr = await opensslCsr(dir, name, 'ec-p256');
  return { requestId: `${name}-r1`, csr, nameplate: { ...NAMEPLATE, serialNumber: `SN-${name}` }, ...extra };
}

/**
 * One request and its answer with mosquitto_rr (mosquitto-clients): it
 * subscribes to the response topic, publishes the request (QoS 1) and prints
 * the first answer. With MQTT 5 the request carries the response topic; with
 * 3.1.1 (the embedded broker) the device's own response topic is used.
 */
export async function requestOnce(
  port: number,
  cafile: string,
  name: string,
  payload: string | Record<string, unknown>,
  o: { v5?: boolean; clientId?: string; topic?: string; seconds?: number } = {},
): Promise<{ answer?: Answer; code: number; output: string }> {
  const body = typeof payload === 'string' ? payload : JSON.stringify(payload);
  const args = [
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    '--cafile',
    cafile,
    '-i',
    o.clientId ?? name,
    '-V',
    o.v5 === false ? '311' : '5',
    '-q',
    '1',
    '-t',
    o.topic ?? `${PREFIX}/${name}/request`,
    '-e',
    `${PREFIX}/${name}/response`,
    '-m',
    body,
    '-W',
    String(o.seconds ?? 10),
  ];
  try {
    const { stdout, stderr } = await exec('mosquitto_rr', args, { timeout: 20_000, maxBuffer: 1 << 20 });
    const line = stdout.trim().split('\n').pop() ?? '';
    return { answer: JSON.parse(line) as Answer, code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, output: (e.stdout ?? '') + (e.stderr ?? '') };
  }
}

/** Writes the issued certificate next to the device key, for mosquitto_pub --cert/--key. */
export function saveIssued(dir: string, name: string, answer: Answer): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  writeFileSync(cert, answer.certificate! + (answer.caChain ?? []).slice(0, -1).join(''));
  return { cert, key: join(dir, `${name}.key`) };
}

export const readPem = (file: string) => readFileSync(file, 'utf8');
