/**
 * Age-based removal of workload log directories: logs outlive their workload (for `mxc logs` after
 * a crash) but not the retention period.
 */
import type { Dirent } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

export interface PruneOptions {
  /** Directory names (workload ids) never removed, e.g. the workloads still running. */
  keep?: Iterable<string>;
  /** The current time in ms (for tests); default Date.now(). */
  now?: number;
}

/** Newest mtime of a directory and the files directly in it. */
async function lastWrite(dir: string): Promise<number> {
  let newest = (await stat(dir)).mtimeMs;
  for (const entry of await readdir(dir)) {
    const s = await stat(join(dir, entry)).catch(() => null);
    if (s && s.mtimeMs > newest) newest = s.mtimeMs;
  }
  return newest;
}

/**
 * Removes each subdirectory of `rootDir` whose newest write is older than `retentionMs`.
 * Returns the names removed. A missing `rootDir` has nothing to prune.
 */
export async function pruneLogs(
  rootDir: string,
  retentionMs: number,
  opts: PruneOptions = {},
): Promise<string[]> {
  if (!Number.isFinite(retentionMs) || retentionMs < 0) {
    throw new Error(`log retention must be a non-negative number of milliseconds, got ${retentionMs}`);
  }
  const keep = new Set(opts.keep ?? []);
  const cutoff = (opts.now ?? Date.now()) - retentionMs;
  let entries: Dirent[];
  try {
    entries = await readdir(rootDir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new Error(`cannot list log directory ${rootDir}`, { cause: err });
  }
  const removed: string[] = [];
  for (const entry of entries) {
    if (!entry.isDirectory() || keep.has(entry.name)) continue;
    const dir = join(rootDir, entry.name);
    const newest = await lastWrite(dir).catch(() => null);
    if (newest === null || newest >= cutoff) continue;
    await rm(dir, { recursive: true, force: true });
    removed.push(entry.name);
  }
  return removed;
}
