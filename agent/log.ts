import pino, { type Level, type Logger } from 'pino';
import pretty from 'pino-pretty';
import { maskSecrets } from './secrets.js';

export type { Logger } from 'pino';
export type LogLevel = Level;

/**
 * The root logger and its per-module children. pino children copy the level
 * when they are made, so the hub keeps them to change every level at once on
 * a configuration reload.
 */
export class LogHub {
  readonly root: Logger;
  private readonly children = new Map<string, Logger>();

  constructor(options: { level: LogLevel; pretty: boolean; destination?: NodeJS.WritableStream }) {
    const stream = options.pretty
      ? pretty({ colorize: process.stdout.isTTY === true, sync: true, translateTime: 'SYS:standard', destination: 1 })
      : (options.destination ?? pino.destination({ dest: 1, sync: true }));
    this.root = pino(
      {
        level: options.level,
        base: { pid: process.pid },
        timestamp: pino.stdTimeFunctions.isoTime,
        // Every log object passes the same secret matcher as `config check`:
        // no secret value reaches a log line, at any depth.
        formatters: { level: (label) => ({ level: label }), log: (object) => maskSecrets(object) },
      },
      stream,
    );
  }

  /** The logger for one module, with `module` as a field on every line. */
  child(module: string): Logger {
    let log = this.children.get(module);
    if (!log) {
      log = this.root.child({ module });
      this.children.set(module, log);
    }
    return log;
  }

  setLevel(level: LogLevel): void {
    this.root.level = level;
    for (const log of this.children.values()) log.level = level;
  }

  get level(): LogLevel {
    return this.root.level as LogLevel;
  }
}
