import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { newConsoleSecret, newTokenSecret } from '../../agent/api/auth.js';
import { ConsoleCookies } from '../../agent/api/consoleCookie.js';
import { csvField } from '../../agent/api/consoleRoutes.js';

const req = (method: string, headers: Record<string, string>, encrypted = false) =>
  ({ method, headers: { host: 'gw.plant.example:8470', ...headers }, socket: { encrypted } }) as unknown as IncomingMessage;

describe('the console cookie', () => {
  const cookies = new ConsoleCookies();
  const secret = newConsoleSecret();

  it.each([
    ['the cookie among others', `theme=dark; edge_console=${secret}; lang=de`, secret],
    ['no cookie header', undefined, undefined],
    ['another cookie only', 'edge_consolex=abc', undefined],
    ['a value that is no credential', 'edge_console=../../etc/passwd', undefined],
    ['an API token (a cookie never carries one)', `edge_console=${newTokenSecret()}`, undefined],
    ['the name it has under TLS, on plain HTTP', `__Host-edge_console=${secret}`, undefined],
    ['an empty value', 'edge_console=', undefined],
  ])('reads %s', (_why, header, expected) => {
    expect(cookies.secretOf(req('GET', header === undefined ? {} : { cookie: header }))).toBe(expected);
  });

  it('under TLS, reads and sets only the __Host- name (which no other service on the host name can set)', () => {
    expect(cookies.secretOf(req('GET', { cookie: `__Host-edge_console=${secret}` }, true))).toBe(secret);
    expect(cookies.secretOf(req('GET', { cookie: `edge_console=${secret}` }, true))).toBeUndefined();
  });

  it('lets reads through; a change needs the CSRF token of this credential from this origin', () => {
    const csrf = cookies.csrfFor(secret);
    expect(csrf).toMatch(/^[\w-]{43}$/);
    expect(cookies.csrfRefusal(req('GET', {}), secret)).toBeUndefined();
    expect(cookies.csrfRefusal(req('HEAD', {}), secret)).toBeUndefined();
    expect(cookies.csrfRefusal(req('POST', { 'x-csrf-token': csrf }), secret)).toBeUndefined();
    expect(cookies.csrfRefusal(req('DELETE', { 'x-csrf-token': csrf, origin: 'https://gw.plant.example:8470' }), secret)).toBeUndefined();
    const refused: [string, string, Record<string, string>][] = [
      ['no header', 'POST', {}],
      ['an empty header', 'PUT', { 'x-csrf-token': '' }],
      ["another credential's token", 'POST', { 'x-csrf-token': cookies.csrfFor(newTokenSecret()) }],
      ["another agent's token (another key)", 'POST', { 'x-csrf-token': new ConsoleCookies().csrfFor(secret) }],
      ['a shorter token', 'POST', { 'x-csrf-token': csrf.slice(1) }],
      ['another origin', 'POST', { 'x-csrf-token': csrf, origin: 'https://evil.example' }],
      ['another port', 'POST', { 'x-csrf-token': csrf, origin: 'https://gw.plant.example:9999' }],
      ['an opaque origin', 'POST', { 'x-csrf-token': csrf, origin: 'null' }],
    ];
    for (const [why, method, headers] of refused) expect(cookies.csrfRefusal(req(method, headers), secret), why).toMatch(/origin|header/);
  });
});

describe('a CSV field', () => {
  it.each([
    ['plain', 'pump-7', 'pump-7'],
    ['empty', '', ''],
    ['a comma', 'a,b', '"a,b"'],
    ['quotes', 'say "hi"', '"say ""hi"""'],
    ['a line break', 'a\nb', '"a\nb"'],
    ['a formula', '=1+2', "'=1+2"],
    ['a formula with a comma', '=SUM(A1,A2)', `"'=SUM(A1,A2)"`],
    ['plus, minus, at, tab', '+1|-1|@x|\tx', "'+1|-1|@x|\tx"],
    ['a minus inside', 'a-1', 'a-1'],
  ])('%s', (_why, value, expected) => {
    expect(csvField(value)).toBe(expected);
  });
});
