import { readFileSync } from 'node:fs';
import { request } from 'node:https';

/** The agent's local API with a bearer token: JSON in, JSON out; an answer other than 2xx is an error naming the route. */
export function makeApi(base: string, token: string) {
  const call = async (method: string, path: string, body?: unknown): Promise<Response> => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
    return res;
  };
  return {
    get: async <T>(path: string): Promise<T> => (await call('GET', path)).json() as Promise<T>,
    post: async <T>(path: string, body: unknown): Promise<T> => (await call('POST', path, body)).json() as Promise<T>,
    text: async (path: string): Promise<string> => (await call('GET', path)).text(),
  };
}

/** How many device records the reference CMMS receiver holds for a gateway (its listing route, over HTTPS with its CA and token). */
export function cmmsRecords(o: { port: number; caFile: string; token: string; gatewayId: string }): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: o.port,
        path: `/v1/gateways/${o.gatewayId}/devices?limit=10000`,
        ca: readFileSync(o.caFile, 'utf8'),
        headers: { authorization: `Bearer ${o.token}` },
        timeout: 5_000,
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`the CMMS receiver answered ${res.statusCode}`));
          resolve((JSON.parse(text) as { items: unknown[] }).items.length);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('the CMMS receiver did not answer')));
    req.on('error', reject);
    req.end();
  });
}
