import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** Runs the openssl command line tool: the independent check of everything the CA makes. */
export async function openssl(args: string[], cwd: string): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec('openssl', args, { cwd });
    return { ok: true, stdout, stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

export type KeySpec = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-1024' | 'ec-secp256k1';

const newkey: Record<KeySpec, string[]> = {
  'ec-p256': ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  'ec-p384': ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'],
  'ec-secp256k1': ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1'],
  'rsa-2048': ['-newkey', 'rsa:2048'],
  'rsa-1024': ['-newkey', 'rsa:1024'],
};

/** A key and a CSR made by `openssl req`, not by the agent's code. Returns the CSR PEM. */
export async function opensslCsr(
  dir: string,
  name: string,
  key: KeySpec,
  options: { subject?: string; addext?: string[]; args?: string[] } = {},
): Promise<string> {
  const args = [
    'req',
    '-new',
    ...newkey[key],
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-subj',
    options.subject ?? `/CN=${name}`,
    '-out',
    `${name}.csr`,
    ...(options.args ?? []),
  ];
  for (const ext of options.addext ?? []) args.push('-addext', ext);
  const result = await openssl(args, dir);
  if (!result.ok) throw new Error(`openssl req failed: ${result.stderr}`);
  return readFileSync(join(dir, `${name}.csr`), 'utf8');
}

/** `openssl x509 -text` of a PEM file. */
export async function certText(dir: string, file: string): Promise<string> {
  const result = await openssl(['x509', '-in', file, '-noout', '-text'], dir);
  if (!result.ok) throw new Error(`openssl x509 failed: ${result.stderr}`);
  return result.stdout;
}
