/**
 * A job's closure as the cache knows it: the roots and everything they reference, with NAR sizes,
 * read from the signed narinfos. Used to refuse incomplete jobs and to place by locality.
 */
import type { CacheStore } from './store.js';

export interface CachedClosure {
  /** Every path of the closure with its NAR size (empty when a root is missing). */
  paths: { path: string; nar_size: number }[];
  /** Roots, or references, the cache does not hold. */
  missing: string[];
}

const SLICE = 256;

export async function cachedClosure(store: CacheStore, roots: readonly string[]): Promise<CachedClosure> {
  const seen = new Map<string, number>();
  const missing: string[] = [];
  let frontier = [...new Set(roots)];
  while (frontier.length > 0) {
    const next = new Set<string>();
    // A slice of narinfos at a time: a closure of thousands of paths shares the event loop.
    for (let i = 0; i < frontier.length; i += SLICE) {
      const slice = frontier.slice(i, i + SLICE);
      const infos = await Promise.all(slice.map(async (p) => [p, await store.info(p)] as const));
      for (const [p, info] of infos) {
        if (!info) {
          missing.push(p);
          continue;
        }
        seen.set(p, info.narSize);
        for (const r of info.references) if (!seen.has(r) && r !== p) next.add(r);
      }
    }
    frontier = [...next].filter((p) => !seen.has(p));
  }
  return {
    paths: [...seen]
      .map(([path, nar_size]) => ({ path, nar_size }))
      .sort((a, b) => a.path.localeCompare(b.path)),
    missing,
  };
}
