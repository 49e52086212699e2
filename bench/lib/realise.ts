/** Realising a closure from an mxc cache into a store of its own, as the cache benches time it. */
import { run } from '../../lib/exec.js';

/** `nix-store --realise` of `path` into the store at `storeDir`, substituting only from `cacheUrl`. */
export async function realiseFromCache(
  storeDir: string,
  path: string,
  cacheUrl: string,
  publicKey: string,
): Promise<void> {
  await run('nix-store', [
    '--store',
    storeDir,
    '--realise',
    path,
    '--option',
    'substituters',
    cacheUrl,
    '--option',
    'trusted-public-keys',
    publicKey,
    '--option',
    'narinfo-cache-negative-ttl',
    '0',
  ]);
}
