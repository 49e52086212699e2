/**
 * Thin wrappers over the nix command-line tools. Every call disables substituters unless the caller
 * gives its own (there is no cache.nixos.org here, and a cold lookup costs seconds of DNS).
 */
import { type RunOptions, run } from './exec.js';

/** Options that every nix invocation gets unless overridden. */
export const NIX_OFFLINE_OPTIONS = ['--option', 'substituters', ''] as const;

/** `nix-build FILE --no-out-link [args]` → the output store paths. */
export async function nixBuild(args: readonly string[], opts: RunOptions = {}): Promise<string[]> {
  const { stdout } = await run('nix-build', [...NIX_OFFLINE_OPTIONS, '--no-out-link', ...args], opts);
  return stdout.split('\n').filter((l) => l.startsWith('/nix/store/'));
}

/** The closure (all store paths referenced transitively) of the given paths. */
export async function closureOf(
  paths: readonly string[],
  opts: RunOptions & { store?: string } = {},
): Promise<string[]> {
  if (paths.length === 0) return [];
  const storeArgs = opts.store ? ['--store', opts.store] : [];
  const { stdout } = await run('nix-store', [...storeArgs, '-qR', ...paths], opts);
  return stdout.split('\n').filter((l) => l.startsWith('/nix/store/'));
}

/** Whether a path is a valid (registered) store path in the given store. */
export async function isValidPath(
  path: string,
  opts: RunOptions & { store?: string } = {},
): Promise<boolean> {
  const storeArgs = opts.store ? ['--store', opts.store] : [];
  try {
    await run('nix-store', [...storeArgs, '--check-validity', path], opts);
    return true;
  } catch {
    return false;
  }
}

/** Nix's own version string, or null when nix is not installed. */
export async function nixVersion(): Promise<string | null> {
  try {
    const { stdout } = await run('nix-store', ['--version'], { timeoutMs: 10_000 });
    return stdout.trim().split(' ').pop() ?? null;
  } catch {
    return null;
  }
}
