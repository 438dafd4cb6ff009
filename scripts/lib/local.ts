import { execFileSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

/** A free TCP port on 127.0.0.1, chosen by the kernel (benchmarks and tests run side by side). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Where mosquitto lives (Debian puts it in /usr/sbin, which a non-root PATH may lack); undefined when it is not installed. */
export function findMosquitto(): string | undefined {
  for (const candidate of ['mosquitto', '/usr/sbin/mosquitto']) {
    try {
      execFileSync(candidate, ['-h'], { stdio: 'ignore' });
      return candidate;
    } catch (err) {
      // `mosquitto -h` exits 3 after printing its help: it exists.
      if ((err as { status?: number }).status !== undefined) return candidate;
    }
  }
  return undefined;
}

/** Fixtures and the demo plant listen on 127.0.0.0/8 only: anything else is refused. */
export function requireLoopback(host: string): string {
  if (!/^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(host) || host.split('.').some((octet) => Number(octet) > 255)) {
    throw new Error(`${host} is not an IPv4 loopback address (127.0.0.0/8)`);
  }
  return host;
}

/**
 * Stops a child process: SIGTERM (a stopped one is let go first), then
 * SIGKILL if it has not exited within `graceMs`. Resolves once it is gone.
 */
export async function stopChild(child: ChildProcess, graceMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGCONT');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}
