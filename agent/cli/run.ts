import { App } from '../app.js';
import { loadConfig, type LoadedConfig } from '../config/load.js';
import { ConfigError, describeError, exitCodeFor, ExitCode } from '../errors.js';
import { SystemdNotifier } from '../lifecycle/sdNotify.js';
import { SignalHandler } from '../lifecycle/signals.js';
import { LogHub } from '../log.js';
import { configPath } from './common.js';

/**
 * `edge-agent run`: the daemon. Resolves with the exit code; the caller
 * exits. SIGTERM/SIGINT stop gracefully (0); a second one forces exit (130);
 * SIGHUP reloads the configuration.
 */
export async function runDaemon(options: { config?: string; pretty?: boolean }): Promise<number> {
  const file = configPath(options.config);
  const reread = (): LoadedConfig => loadConfig({ file });
  let loaded: LoadedConfig;
  try {
    loaded = reread();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`edge-agent: ${err.describe()}\n`);
      return ExitCode.config;
    }
    throw err;
  }

  const logs = new LogHub({ level: loaded.config.log.level, pretty: options.pretty === true || loaded.config.log.pretty });
  const log = logs.child('main');
  const notifier = new SystemdNotifier({ log: logs.child('systemd'), env: process.env });
  const app = new App({ loaded, logs, notifier, reread });
  const shutdown = new AbortController();

  let finish!: (code: number) => void;
  const done = new Promise<number>((resolve) => (finish = resolve));
  let stopping: Promise<void> | undefined;
  const stop = (reason: string, code: number) => {
    if (stopping) return;
    // The signal's reason, read by nothing but the services' abort handlers: no code to report.
    shutdown.abort(new Error(reason));
    stopping = app.stop(reason).then(() => finish(code));
  };

  const signals = new SignalHandler({
    onStop: (signal) => {
      log.info({ signal }, 'signal received: stopping');
      stop(`signal ${signal}`, ExitCode.ok);
    },
    onForce: (signal) => {
      log.warn({ signal }, 'second signal: forcing exit without a clean stop');
      notifier.close();
      process.exit(ExitCode.forced);
    },
    onReload: () => {
      log.info({ signal: 'SIGHUP' }, 'signal received: reloading configuration');
      void app.reload();
    },
  });
  signals.install();
  const onFatal = (err: unknown) => {
    log.fatal({ err }, 'unexpected error: stopping');
    signals.markStopping();
    stop('unexpected error', ExitCode.failure);
  };
  process.on('uncaughtException', onFatal);
  process.on('unhandledRejection', onFatal);

  try {
    await app.start(shutdown.signal);
  } catch (err) {
    if (shutdown.signal.aborted) {
      // A stop signal arrived during start: the runner has already stopped what started.
      await stopping;
      return done;
    }
    const code = exitCodeFor(err);
    log.fatal({ err, exitCode: code }, `edge-agent could not start: ${describeError(err)}`);
    process.stderr.write(`edge-agent: could not start: ${describeError(err)}\n`);
    notifier.close();
    return code;
  }
  const code = await done;
  notifier.close();
  return code;
}
