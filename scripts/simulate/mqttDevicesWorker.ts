/**
 * One worker thread of the device simulator (simulateDevices with
 * `workers` > 1): it runs its block of devices (workerData.options), says
 * `ready` once its keys are made (with `pregenerate`), starts them at the
 * caller's `go` and answers with its results (mqttDevices.ts, WorkerMessage).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { simulateHere, type SimulationOptions, type WorkerMessage } from './mqttDevices.js';

const port = parentPort;
if (!port) throw new Error('mqttDevicesWorker.js runs as a worker thread of simulateDevices');
const stop = new AbortController();
let go!: () => void;
const going = new Promise<void>((resolve) => (go = resolve));
port.on('message', (m: 'go' | 'abort') => (m === 'go' ? go() : stop.abort()));
const { options, tellRequested } = workerData as { options: SimulationOptions; tellRequested: boolean };
const onRequested = () => port.postMessage({ type: 'requested' } satisfies WorkerMessage);
const { configured: _, ...result } = await simulateHere({ ...options, signal: stop.signal, ...(tellRequested ? { onRequested } : {}) }, (prepareMs) => {
  port.postMessage({ type: 'ready', prepareMs } satisfies WorkerMessage);
  return going;
});
port.postMessage({ type: 'done', result } satisfies WorkerMessage);
port.close();
