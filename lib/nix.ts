/**
 * Thin wrappers over the nix command-line tools. Every call disables substituters unless the caller
 * gives its own (there is no cache.nixos.org here, and a cold lookup costs seconds of DNS).
 */
import { isSameCommand, type RunOptions, run, type StartedCommand, settleStarted } from './exec.js';

/** Options that every nix invocation gets unless overridden. */
export const NIX_OFFLINE_OPTIONS = ['--option', 'substituters', ''] as const;

/** The arguments `nixBuild(args)` runs nix-build with. */
export const nixBuildArgs = (args: readonly string[]): string[] => [
  ...NIX_OFFLINE_OPTIONS,
  '--no-out-link',
  ...args,
];

/**
 * `nix-build FILE --no-out-link [args]` → the output store paths. `started`: a nix-build started
 * already, taken over when it runs exactly these arguments (else killed, and a new one run).
 */
export async function nixBuild(
  args: readonly string[],
  opts: RunOptions & { started?: StartedCommand } = {},
): Promise<string[]> {
  const { started, ...runOpts } = opts;
  const full = nixBuildArgs(args);
  let stdout: string;
  if (started && isSameCommand(started, 'nix-build', full))
    ({ stdout } = await settleStarted(started, runOpts));
  else {
    started?.kill();
    ({ stdout } = await run('nix-build', full, runOpts));
  }
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
