import { format } from 'node:util';
import type { Logger } from '../log.js';

type OpcuaClientModule = typeof import('node-opcua-client');

let loaded: Promise<OpcuaClientModule> | undefined;

/**
 * Loads node-opcua on first use, after routing its console logging into
 * the agent's log. node-opcua prints warnings with console.log, which would
 * put plain text into the JSON log stream and into the output of CLI
 * commands; and the CLI should not pay for loading it at all. Node 20 makes
 * node-opcua print NODE-OPCUA-W27 (RSA PKCS#1 v1.5 decryption disabled by the
 * CVE-2023-46809 fix): it only matters for the deprecated Basic128Rsa15 and
 * Basic256 policies, which the agent does not use, so it goes to debug.
 */
export function loadOpcua(log: Logger): Promise<OpcuaClientModule> {
  loaded ??= (async () => {
    const debug = await import('node-opcua-debug');
    const route =
      (level: 'warn' | 'error' | 'debug') =>
      (ctx: { filename?: string } | undefined, ...args: unknown[]) => {
        const text = format(...args);
        const quiet = ctx?.filename === 'verify_pcks1';
        log[quiet ? 'debug' : level]({ source: ctx?.filename }, `node-opcua: ${text.trim()}`);
      };
    debug.setWarningLogger(route('warn'));
    debug.setErrorLogger(route('error'));
    debug.setDebugLogger(route('debug'));
    debug.setTraceLogger(route('debug'));
    return import('node-opcua-client');
  })();
  return loaded;
}
