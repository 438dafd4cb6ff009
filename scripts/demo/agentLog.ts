import { createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

export type LogLine = Record<string, unknown> & { msg?: string };

/**
 * The daemon's JSON log: every line appended to a file (for `tail -f`) and
 * kept, parsed, so the runner can wait for the lines that say where the
 * daemon listens and that it is ready.
 */
export class AgentLog {
  private readonly lines: LogLine[] = [];
  private readonly file: WriteStream;
  private wake: (() => void)[] = [];
  private ended = false;

  constructor(path: string, stdout: Readable, stderr: Readable) {
    this.file = createWriteStream(path, { flags: 'a', mode: 0o600 });
    createInterface({ input: stdout }).on('line', (line) => {
      this.file.write(`${line}\n`);
      try {
        this.lines.push(JSON.parse(line) as LogLine);
      } catch {
        this.lines.push({ msg: line });
      }
      for (const w of this.wake.splice(0)) w();
    });
    stderr.on('data', (d: Buffer) => this.file.write(d));
    stdout.once('close', () => {
      this.ended = true;
      for (const w of this.wake.splice(0)) w();
    });
  }

  /** The first line that matches; rejects once the log ends without one, or after `timeoutMs`. */
  async waitFor(match: (l: LogLine) => boolean, what: string, timeoutMs: number): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.lines.find(match);
      if (found) return found;
      if (this.ended) throw new Error(`the agent stopped before ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${Math.round(timeoutMs / 1000)} s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The last errors the agent logged, for a report of what went wrong. */
  problems(count = 5): LogLine[] {
    return this.lines.filter((l) => l.level === 'error' || l.level === 'fatal').slice(-count);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.file.end(resolve));
  }
}
