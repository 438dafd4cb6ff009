import { UsageError } from '../errors.js';

/** Longer than any directory accepts: a file piped in by mistake is refused rather than sent. */
const MAX_PASSWORD = 1024;

/**
 * The first line of `input` (--password-stdin), without its line end; the
 * rest is never read. An empty line, or none, is refused: an empty password
 * is an anonymous bind to many directories, never a login.
 */
export async function passwordFromStream(input: AsyncIterable<Buffer | string>): Promise<string> {
  let text = '';
  for await (const chunk of input) {
    text += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    const end = text.indexOf('\n');
    if (end >= 0) {
      text = text.slice(0, end);
      break;
    }
    if (text.length > MAX_PASSWORD) break;
  }
  text = text.replace(/\r$/, '');
  if (text.length > MAX_PASSWORD) throw new UsageError(`--password-stdin: the first line of standard input is longer than ${MAX_PASSWORD} characters`);
  if (text === '') throw new UsageError('--password-stdin: the first line of standard input is empty; an empty password is never sent');
  return text;
}

/** The part of a TTY stream the prompt uses (process.stdin when it is a terminal). */
export interface RawInput {
  setRawMode(mode: boolean): unknown;
  on(event: 'data', listener: (data: Buffer) => void): unknown;
  off(event: 'data', listener: (data: Buffer) => void): unknown;
  resume(): unknown;
  pause(): unknown;
}

/**
 * Asks for a password on the terminal without echo: raw mode, so the
 * characters are never shown and the line editing is done here (Backspace,
 * Ctrl-U). Resolves with what was typed at Enter (or Ctrl-D), or undefined
 * at Ctrl-C (raw mode turns it into a character, not a signal).
 */
export function promptHidden(prompt: string, input: RawInput, output: { write(text: string): unknown }): Promise<string | undefined> {
  return new Promise((resolve) => {
    let typed: string[] = [];
    const finish = (value: string | undefined) => {
      input.off('data', onData);
      input.setRawMode(false);
      input.pause();
      output.write('\n');
      resolve(value);
    };
    const onData = (data: Buffer) => {
      for (const ch of data.toString('utf8')) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return finish(typed.join(''));
        if (ch === '\u0003') return finish(undefined);
        if (ch === '\u007f' || ch === '\b') typed = typed.slice(0, -1);
        else if (ch === '\u0015') typed = [];
        else if (ch >= ' ') typed.push(ch);
      }
    };
    output.write(prompt);
    input.setRawMode(true);
    input.on('data', onData);
    input.resume();
  });
}

/**
 * The password for `edge-agent login`: the first line of standard input
 * with --password-stdin, else asked on the terminal without echo. Resolves
 * undefined when the user pressed Ctrl-C.
 */
export async function readPassword(user: string, fromStdin: boolean, stdin: NodeJS.ReadStream = process.stdin): Promise<string | undefined> {
  if (fromStdin) return passwordFromStream(stdin);
  if (!stdin.isTTY) {
    throw new UsageError('standard input is not a terminal, so the password cannot be asked without echo: give it on standard input with --password-stdin');
  }
  const typed = await promptHidden(`password for ${user}: `, stdin, process.stderr);
  if (typed === '') throw new UsageError('empty password: nothing sent');
  return typed;
}
