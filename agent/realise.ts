/**
 * Realises a workload's closure before anything of it runs: `nix-store --realise` with the coordinator's
 * cache as the only substituter, its key as the only trusted key and signatures required. These
 * settings belong to the agent, never to the job.
 */
import { run } from '../compiler/exec.js';

export interface CacheTrust {
  /** e.g. http://127.0.0.1:4000/cache */
  url: string;
  /** `name:base64` */
  publicKey: string;
  /** A netrc file holding the agent token as the password for the cache's host (nix sends basic auth). */
  netrcFile?: string;
}

export interface RealiseOptions {
  paths: string[];
  /** Chroot store root (`nix-store --store DIR`); unset: the host store. */
  storeRoot?: string;
  cache?: CacheTrust | null;
  signal?: AbortSignal;
  onProgress?: (p: { done: number; total: number; line: string }) => void;
}

/** Nix options pinning trust to the coordinator's cache alone. */
export function trustOptions(cache: CacheTrust | null | undefined): string[] {
  return [
    '--option',
    'substituters',
    cache ? cache.url : '',
    '--option',
    'trusted-public-keys',
    cache ? cache.publicKey : '',
    '--option',
    'require-sigs',
    'true',
    '--option',
    'fallback',
    'false',
    // A path pushed a moment ago must not be hidden by a cached "not found".
    '--option',
    'narinfo-cache-negative-ttl',
    '0',
    ...(cache?.netrcFile ? ['--option', 'netrc-file', cache.netrcFile] : []),
  ];
}

export async function realiseClosure(opts: RealiseOptions): Promise<void> {
  if (opts.paths.length === 0) return;
  const store = opts.storeRoot ? ['--store', opts.storeRoot] : [];
  let done = 0;
  await run('nix-store', [...store, '--realise', ...opts.paths, ...trustOptions(opts.cache)], {
    signal: opts.signal,
    timeoutMs: 30 * 60_000,
    onStderrLine: (line) => {
      if (line.startsWith('copying path')) done++;
      opts.onProgress?.({ done, total: opts.paths.length, line });
    },
  });
}
