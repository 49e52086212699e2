/**
 * Builds the directory a microVM sees as /nix/store: only the job's closure, as hard links into the
 * real store (copies when the store is on another filesystem or links are refused). A 9p share
 * exposes a whole directory, so this view, not the guest, is what hides the rest of the store:
 * a guest root that remounts the share still sees only the closure.
 */
import { copyFile, link, lstat, mkdir, readdir, readlink, symlink } from 'node:fs/promises';
import { basename, join } from 'node:path';

const STORE_PATH = /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$/;

export interface StoreViewStats {
  paths: number;
  files: number;
  /** Files that could not be hard-linked and were copied. */
  copied: number;
}

/** Fills viewDir (created) with the closure's store paths taken from storeDir. */
export async function buildStoreView(
  storeDir: string,
  closure: readonly string[],
  viewDir: string,
): Promise<StoreViewStats> {
  const bad = closure.filter((p) => !STORE_PATH.test(p));
  if (bad.length) {
    throw new Error(
      `closure entries must be full /nix/store/<hash>-<name> paths; got ${bad.map((p) => JSON.stringify(p)).join(', ')}`,
    );
  }
  const names = [...new Set(closure.map((p) => basename(p)))];
  const missing: string[] = [];
  for (const n of names) {
    try {
      await lstat(join(storeDir, n));
    } catch {
      missing.push(n);
    }
  }
  if (missing.length) {
    throw new Error(
      `closure paths missing from ${storeDir}: ${missing.join(', ')}; realise the closure before starting the microVM`,
    );
  }
  await mkdir(viewDir, { recursive: true });
  const stats: StoreViewStats = { paths: names.length, files: 0, copied: 0 };
  for (const n of names) await mirror(join(storeDir, n), join(viewDir, n), stats);
  return stats;
}

async function mirror(src: string, dest: string, stats: StoreViewStats): Promise<void> {
  const st = await lstat(src);
  if (st.isSymbolicLink()) {
    await symlink(await readlink(src), dest);
  } else if (st.isDirectory()) {
    await mkdir(dest, { mode: 0o755 });
    for (const ent of await readdir(src)) await mirror(join(src, ent), join(dest, ent), stats);
  } else if (st.isFile()) {
    stats.files++;
    try {
      await link(src, dest);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw e;
      await copyFile(src, dest);
      stats.copied++;
    }
  }
  // Sockets, fifos and devices never occur in a store path; skipping them keeps the view clean.
}
