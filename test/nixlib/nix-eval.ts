/**
 * Helpers for the nixlib tests: evaluate Nix expressions with `nix-instantiate` (offline) and
 * build the examples. Paths are absolute so the tests run from any working directory.
 */
import { fileURLToPath } from 'node:url';
import { CommandError, run } from '../../lib/exec.js';
import { NIX_OFFLINE_OPTIONS } from '../../lib/nix.js';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const HERE = fileURLToPath(new URL('./', import.meta.url));

/** `nix-instantiate --eval --strict --json -E expr`, parsed. */
export async function evalJson<T>(expr: string): Promise<T> {
  const { stdout } = await run('nix-instantiate', [
    ...NIX_OFFLINE_OPTIONS,
    '--eval',
    '--strict',
    '--json',
    '-E',
    expr,
  ]);
  return JSON.parse(stdout) as T;
}

/** Evaluates expr expecting failure; resolves to nix's stderr (rejects when it succeeds). */
export async function evalError(expr: string): Promise<string> {
  try {
    const { stdout } = await run('nix-instantiate', [
      ...NIX_OFFLINE_OPTIONS,
      '--eval',
      '--strict',
      '-E',
      expr,
    ]);
    throw new Error(`expected evaluation to fail, but it printed: ${stdout.slice(0, 300)}`);
  } catch (err) {
    if (err instanceof CommandError) return err.stderr;
    throw err;
  }
}

/** A Nix string literal for an absolute path (for `import "${path}"`). */
export function nixString(s: string): string {
  return JSON.stringify(s).replace(/\$\{/g, '\\${');
}
