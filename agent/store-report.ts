/** What the agent tells the coordinator about its store: every valid path on join, changes after that. */
import { run } from '../lib/exec.js';

/** All valid paths of the store (the host's, or a chroot store under `storeRoot`). */
export async function listStorePaths(storeRoot?: string): Promise<string[]> {
  const store = storeRoot ? ['--store', storeRoot] : [];
  try {
    const { stdout } = await run(
      'nix',
      [
        '--extra-experimental-features',
        'nix-command',
        'path-info',
        '--all',
        ...store,
        '--option',
        'substituters',
        '',
      ],
      { timeoutMs: 120_000 },
    );
    return stdout.split('\n').filter((l) => l.startsWith('/nix/store/'));
  } catch {
    // A store that does not exist yet holds nothing.
    return [];
  }
}
