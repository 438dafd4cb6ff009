import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Waiters } from './waiters.js';

export interface Notification {
  pid: number | null;
  text: string;
  fields: Record<string, string>;
}

const SCRIPT = fileURLToPath(new URL('./notify_capture.py', import.meta.url));

/** A real AF_UNIX datagram socket (python3) standing where systemd's NOTIFY_SOCKET would be. */
export class NotifyCapture {
  readonly messages: Notification[] = [];
  private readonly waiters = new Waiters();

  private constructor(
    readonly path: string,
    private readonly child: ChildProcess,
  ) {}

  static async start(dir: string): Promise<NotifyCapture> {
    const path = join(dir, 'notify.sock');
    const child = spawn('python3', [SCRIPT, path], { stdio: ['pipe', 'pipe', 'inherit'] });
    const capture = new NotifyCapture(path, child);
    const lines = createInterface({ input: child.stdout! });
    await new Promise<void>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`notify_capture.py exited with ${code}`)));
      lines.on('line', (line) => {
        if (line === 'listening') return resolve();
        const { pid, text } = JSON.parse(line) as { pid: number | null; text: string };
        const fields = Object.fromEntries(text.split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const));
        capture.messages.push({ pid, text, fields });
        capture.waiters.wake();
      });
    });
    return capture;
  }

  /** Resolves with the first message (from index `from`) that matches, or rejects after `timeoutMs`. */
  waitFor(match: (n: Notification) => boolean, timeoutMs = 10_000, from = 0): Promise<Notification> {
    return this.waiters.until(() => this.messages.slice(from).find(match), {
      timeoutMs,
      timeoutMessage: () => `no matching notification; got ${JSON.stringify(this.messages.map((m) => m.text))}`,
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin!.end();
    await exited;
  }
}
