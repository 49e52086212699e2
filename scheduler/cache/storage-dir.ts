/**
 * Cache storage in a directory: `<dir>/narinfo/<hash>.narinfo`, `<dir>/nar/<file>`, `<dir>/tmp/`.
 * Several coordinators may share the directory (MXC_CACHE_DIR, e.g. on NFS): each spools into its own
 * temp folder, NARs arrive by rename and narinfos by link, which refuses to replace one.
 *
 * Durability, what a crash may leave: a file's bytes are on disk once it is synced, and a name in a
 * folder once that folder is synced (POSIX promises nothing in between, and an ext4 without a journal,
 * like this project's VM, orders nothing). So a group of NARs is written and synced side by side
 * (one wait for all, not one per file), renamed into `nar/`, and `nar/` synced once; only then are
 * their narinfos linked, from temp files written and synced in the same wait as the NARs, and
 * `narinfo/` synced once, for all of an upload's groups, before the upload is answered. A narinfo on
 * disk thus always names a NAR on disk, and an answered upload survives a crash. Whole-file-system
 * syncs (syncfs) were not taken: they also wait for every other writer's data on the disk.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, type Stats, stat as statCallback } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { CacheError } from './errors.js';
import type { CacheStorage, NarinfoObject, NarObject, NarPut, ReadyNarinfos } from './storage.js';

/** Temp folders of crashed processes are removed once untouched this long. */
const STALE_SPOOL_MS = 86_400_000;
/**
 * Sub-folders of the temp folder that new files are spread over, in turn. Creating a file holds its
 * folder's lock, and the thread pool creates a group's files side by side: in one folder its threads
 * spin on that lock (perf: rwsem_spin_on_owner, ~10 % of a push's CPU). On ext4, writing a push's 301
 * NARs in groups of 32 took ~280 ms of system CPU in one folder and ~160 ms spread over four.
 */
const SPOOL_SPREAD = 8;

export class DirectoryStorage implements CacheStorage {
  readonly narDir: string;
  readonly narinfoDir: string;
  readonly tmpRoot: string;
  readonly spoolDir: string;
  /** Temp files made so far, which names them: unique in this process's own temp folder, no random bytes. */
  private tmpCount = 0;

  constructor(readonly dir: string) {
    this.narDir = join(dir, 'nar');
    this.narinfoDir = join(dir, 'narinfo');
    this.tmpRoot = join(dir, 'tmp');
    // One temp folder per process: several coordinators may share the directory.
    this.spoolDir = join(this.tmpRoot, `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`);
  }

  get location(): string {
    return this.dir;
  }

  /**
   * Creates the folders and drops temp files crashed uploads left behind: only entries untouched for a
   * day, never the live temp files of another coordinator sharing the directory.
   */
  async init(): Promise<void> {
    try {
      await mkdir(this.narDir, { recursive: true });
      await mkdir(this.narinfoDir, { recursive: true });
      await mkdir(this.spoolDir, { recursive: true });
      for (let k = 0; k < SPOOL_SPREAD; k++) await mkdir(join(this.spoolDir, String(k)), { recursive: true });
    } catch (err) {
      throw new CacheError(
        'CACHE_STORAGE_UNAVAILABLE',
        503,
        `cannot prepare the cache directory ${this.dir} (${(err as Error).message}); check --cache-dir (MXC_CACHE_DIR) and its permissions`,
        { cause: err },
      );
    }
    await removeStaleSpools(this.tmpRoot, this.spoolDir);
  }

  async close(): Promise<void> {
    await rm(this.spoolDir, { recursive: true, force: true });
  }

  /** A new temp file's path, in the next of the temp folder's sub-folders. */
  private tmpPath(name: string): string {
    const n = this.tmpCount++;
    return join(this.spoolDir, String(n % SPOOL_SPREAD), `${n}.${name}`);
  }

  private narinfoPath(hash: string): string {
    return join(this.narinfoDir, `${hash}.narinfo`);
  }

  async getNarinfo(hash: string): Promise<NarinfoObject | null> {
    const file = this.narinfoPath(hash);
    const st = await statOrNull(file);
    if (!st) return null;
    const text = await readFile(file, 'utf8').catch(nullOnMissing);
    return text === null ? null : { text, version: `${st.mtimeMs}:${st.size}` };
  }

  async narinfoVersion(hash: string): Promise<string | null> {
    const st = await statOrNull(this.narinfoPath(hash));
    return st ? `${st.mtimeMs}:${st.size}` : null;
  }

  async putNarinfo(hash: string, text: string): Promise<boolean> {
    const tmp = this.tmpPath(`${hash}.narinfo`);
    await writeFile(tmp, text, { mode: 0o644, flush: true });
    try {
      // link, not rename: an existing narinfo (another coordinator's) is never replaced.
      await link(tmp, this.narinfoPath(hash));
      await syncDir(this.narinfoDir);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err;
    } finally {
      await unlink(tmp).catch(() => {});
    }
  }

  async readyNarinfos(items: readonly { hash: string; text: string }[]): Promise<ReadyNarinfos> {
    const tmps = items.map(({ hash }) => this.tmpPath(`${hash}.narinfo`));
    const drop = async () => {
      await Promise.all(tmps.map((t) => unlink(t).catch(() => {})));
    };
    try {
      // Written and synced side by side (one wait for the group); linked one by one, in order, later.
      await Promise.all(items.map(({ text }, i) => writeFile(tmps[i]!, text, { mode: 0o644, flush: true })));
    } catch (err) {
      await drop();
      throw err;
    }
    return {
      publish: async (keep) => {
        try {
          const out: boolean[] = [];
          for (const [i, { hash }] of items.entries()) {
            if (!keep[i]) continue;
            try {
              await link(tmps[i]!, this.narinfoPath(hash));
              out.push(true);
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
              out.push(false);
            }
          }
          return out;
        } finally {
          await drop();
        }
      },
      drop,
    };
  }

  async syncPublished(): Promise<void> {
    await syncDir(this.narinfoDir);
  }

  async deleteNarinfo(hash: string): Promise<void> {
    await unlink(this.narinfoPath(hash)).catch(nullOnMissing);
  }

  async listNarinfos(): Promise<string[]> {
    return (await readdir(this.narinfoDir)).filter((f) => f.endsWith('.narinfo')).map((f) => f.slice(0, -8));
  }

  async getNar(file: string): Promise<NarObject | null> {
    const path = join(this.narDir, file);
    const st = await statOrNull(path);
    if (!st?.isFile()) return null;
    return { size: st.size, stream: createReadStream(path) };
  }

  async listNars(): Promise<{ file: string; modifiedMs: number }[]> {
    const names = await readdir(this.narDir);
    const out: { file: string; modifiedMs: number }[] = [];
    // A slice at a time: a large cache shares the event loop and the file descriptors.
    for (let i = 0; i < names.length; i += 256) {
      const stats = await Promise.all(names.slice(i, i + 256).map((f) => statOrNull(join(this.narDir, f))));
      stats.forEach((st, j) => {
        if (st?.isFile()) out.push({ file: names[i + j]!, modifiedMs: st.mtimeMs });
      });
    }
    return out;
  }

  async hasNar(file: string): Promise<boolean> {
    return (await statOrNull(join(this.narDir, file)))?.isFile() ?? false;
  }

  async putNar(file: string, spooled: string): Promise<void> {
    await this.putNars([{ file, spooled }]);
  }

  async putNars(items: readonly NarPut[]): Promise<void> {
    // Bytes in memory are written once, synced as they are written; spool files are synced. Side by
    // side: one wait for the group instead of one per file; renamed once all are on disk, and the
    // names synced with one sync of `nar/` (see the module header).
    if (items.length === 0) return;
    const tmps = items.map((i) => ('data' in i ? this.tmpPath(i.file) : i.spooled));
    try {
      await Promise.all(
        items.map((i, k) =>
          'data' in i ? writeFile(tmps[k]!, i.data, { mode: 0o644, flush: true }) : syncFile(i.spooled),
        ),
      );
      await Promise.all(items.map(({ file }, k) => rename(tmps[k]!, join(this.narDir, file))));
      await syncDir(this.narDir);
    } catch (err) {
      await Promise.all(items.map((i, k) => ('data' in i ? unlink(tmps[k]!).catch(() => {}) : undefined)));
      throw err;
    }
  }

  async deleteNar(file: string): Promise<void> {
    await unlink(join(this.narDir, file)).catch(nullOnMissing);
  }
}

/** Syncs a folder's entries (names created, renamed or linked in it) to disk. */
async function syncDir(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

/** Removes day-old folders under `root` except `keep` (a live process's own). */
export async function removeStaleSpools(root: string, keep: string): Promise<void> {
  const dayAgo = Date.now() - STALE_SPOOL_MS;
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const p = join(root, name);
    if (p === keep) continue;
    const st = await statOrNull(p);
    if (st && st.mtimeMs < dayAgo) await rm(p, { recursive: true, force: true }).catch(() => {});
  }
}

/**
 * A file's stat, or null when it is not there (most lookups of a push: `missing`, then each upload's
 * first check). Through the callback API: 600 lookups of absent files cost 7-9 ms of CPU that way and
 * 11-16 ms through fs/promises (a warmed-up loop, 4 and 16 pool threads), its rejection path being dearer.
 */
function statOrNull(path: string): Promise<Stats | null> {
  return new Promise((resolve, reject) => {
    statCallback(path, (err, st) => {
      if (!err) resolve(st);
      else if (err.code === 'ENOENT') resolve(null);
      else reject(err);
    });
  });
}

function nullOnMissing(err: unknown): null {
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
  throw err;
}
