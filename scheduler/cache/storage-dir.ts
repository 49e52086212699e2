/**
 * Cache storage in a directory: `<dir>/pack/<name>.pack`, `<dir>/nar/<file>`, `<dir>/tmp/`, and in a
 * directory written before packs `<dir>/narinfo/<hash>.narinfo`. Several coordinators may share the directory (MXC_CACHE_DIR, e.g. on
 * NFS): each spools into its own temp folder, and files arrive by rename (packs, NARs) or link
 * (narinfos, which refuses to replace one).
 *
 * Packs: a batch upload's group is one file, its small NARs and all its narinfos (spec/cache-pack.ts),
 * written and synced in the temp folder and renamed into `pack/` when the group is published: one file
 * created and synced a group instead of two a path. On this project's VM (ext4 without a journal) each
 * new file cost ~0.4 ms of system CPU (ext4 skips inodes deleted in the last minutes one by one), which
 * was ~40 % of a 301-path push's server CPU. Every process keeps an index of the packs in memory (hash
 * part → narinfo, NAR name → bytes in a pack) and looks for new ones (another coordinator's) in
 * `pack/` when a lookup misses. Large NARs (spooled uploads) stay files of their own in `nar/`, and
 * the folders of the old layout (`narinfo/`, `nar/`) are still read and served: a cache written before
 * packs keeps working as it is. A packed narinfo or NAR is never deleted on its own.
 *
 * Durability, what a crash may leave: a file's bytes are on disk once it is synced, and a name in a
 * folder once that folder is synced (POSIX promises nothing in between, and an ext4 without a journal,
 * like this project's VM, orders nothing). A pack is synced whole before it is renamed into `pack/`, and
 * the large NARs its narinfos name are synced, renamed into `nar/` and `nar/` synced before that; `pack/`
 * (and `narinfo/`, when this process linked into it) is synced once, for all of an upload's groups,
 * before the upload is answered. A narinfo on disk thus always names a NAR on disk, and an answered
 * upload survives a crash. Whole-file-system syncs (syncfs) were not taken: they also wait for every
 * other writer's data on the disk.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, type Stats, stat as statCallback, statSync } from 'node:fs';
import {
  type FileHandle,
  link,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { PACK_MAGIC, PACK_TRAILER_BYTES, PackIndex } from '../../spec/cache-pack.js';
import { CacheError } from './errors.js';
import { NarFindings, nameOfBytes, narNameCheck } from './nar-check.js';
import {
  BufferedNar,
  type CacheStorage,
  type NarinfoObject,
  type NarObject,
  type NarPut,
  type ReadyNarinfos,
  type StorageProblem,
} from './storage.js';

/**
 * Temp folders of crashed processes are removed by every process sharing the directory, at its start
 * and every SPOOL_TOUCH_MS, when it also touches its own (its files go into sub-folders, which leave the
 * folder's mtime as it is): one of this host whose process is gone once untouched GONE_SPOOL_MS (not at
 * once: a container of another host may carry the same host name in another pid namespace), another
 * host's once untouched STALE_SPOOL_MS (their clocks may be off).
 */
const STALE_SPOOL_MS = 86_400_000;
const SPOOL_TOUCH_MS = 60_000;
const GONE_SPOOL_MS = 3 * SPOOL_TOUCH_MS;
/**
 * Sub-folders of the temp folder that new files are spread over, in turn. Creating a file holds its
 * folder's lock, and the thread pool creates a group's files side by side: in one folder its threads
 * spin on that lock (perf: rwsem_spin_on_owner, ~10 % of a push's CPU). On ext4, writing a push's 301
 * NARs in groups of 32 took ~280 ms of system CPU in one folder and ~160 ms spread over four.
 */
const SPOOL_SPREAD = 8;

/** Where a packed NAR or narinfo lies: its pack (a name under `pack/`) and its bytes there. */
interface Packed {
  pack: string;
  at: number;
  size: number;
}

/**
 * A `pack/` listing is skipped when the folder's mtime is the one seen at the last listing and that
 * listing began this long after it: a folder's mtime has the file system's clock tick, so an entry
 * renamed in within the same tick as the one before leaves the mtime as it was.
 */
const SETTLED_MS = 1000;

export class DirectoryStorage implements CacheStorage {
  readonly narDir: string;
  readonly narinfoDir: string;
  readonly packDir: string;
  readonly tmpRoot: string;
  readonly spoolDir: string;
  /** Temp files made so far, which names them: unique in this process's own temp folder, no random bytes. */
  private tmpCount = 0;
  /** The packs read so far (this process's own and others'), by name, and what they hold. */
  private readonly packs = new Set<string>();
  private readonly packedNarinfos = new Map<string, Packed>();
  private readonly packedNars = new Map<string, Packed>();
  /** Later copies of an entry (another pack holding it): served when the one before is found corrupt. */
  private readonly shadowedNarinfos = new Map<string, Packed[]>();
  private readonly shadowedNars = new Map<string, Packed[]>();
  /**
   * Hash parts whose packed narinfos were all dropped (damaged, or their pack gone): still listed, so that
   * orphan collection, which cannot read them, collects nothing rather than the NAR files they name.
   */
  private readonly droppedNarinfos = new Set<string>();
  /**
   * Packs opened so far, by name, kept open: a GET reads its range with the descriptor it has (one
   * thread-pool round trip) instead of open, fstat, read and close (four). See packHandle.
   */
  private readonly openPacks = new Map<string, Promise<OpenPack | null>>();
  /** Packed NARs found whole, with their pack's `mtime:size` then (see getNar). */
  private readonly verifiedNars = new WeakMap<Packed, string>();
  /**
   * NAR files of `nar/` found whole as they were streamed (see looseNar), and found damaged (until
   * replaced, their narinfos are not served), by their `mtime:size` then.
   */
  private readonly fileFindings = new NarFindings();
  /**
   * Narinfo files (the layout before packs) found corrupt, by hash part, with the version found so: not
   * served, and a push may publish the path again in a pack. In memory only: a narinfo that does not
   * verify may be one signed by another key of this cache's name, so nothing on disk is changed.
   */
  private readonly condemnedFiles = new Map<string, string>();
  /** Touches this process's temp folder and removes stale ones (see STALE_SPOOL_MS). */
  private spoolTimer: NodeJS.Timeout | null = null;
  /** Where what is found broken on disk is said (CacheStore sets its log here). */
  onProblem: (problem: StorageProblem) => void = (p) => process.emitWarning(p.message, { code: p.code });
  /** Hash parts this process is publishing in a pack right now. */
  private readonly publishing = new Set<string>();
  /** `pack/`'s mtime at the last listing and when that listing began (see SETTLED_MS). */
  private listed = { mtimeMs: -1, at: 0 };
  private scanning: Promise<void> | null = null;
  private scanQueued: Promise<void> | null = null;
  /** Whether this process linked a narinfo into `narinfo/` (then `syncPublished` syncs it too). */
  private linkedNarinfos = false;
  /**
   * Whether `narinfo/` (the layout before packs) was there at the last scan: only then does a lookup that
   * no pack answers look for a narinfo file. A cache made since packs has none, and its misses (most of
   * a push's lookups) cost no stat of their own.
   */
  private narinfoFolder = false;

  constructor(readonly dir: string) {
    this.narDir = join(dir, 'nar');
    this.narinfoDir = join(dir, 'narinfo');
    this.packDir = join(dir, 'pack');
    this.tmpRoot = join(dir, 'tmp');
    // One temp folder per process: several coordinators may share the directory.
    this.spoolDir = join(this.tmpRoot, `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`);
  }

  get location(): string {
    return this.dir;
  }

  /**
   * Creates the folders, reads the packs' indexes, and drops temp files crashed uploads left behind:
   * only entries untouched for a day, never the live temp files of another coordinator sharing the directory.
   */
  async init(): Promise<void> {
    try {
      await mkdir(this.narDir, { recursive: true });
      await mkdir(this.packDir, { recursive: true });
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
    await this.scanPacks();
    await removeStaleSpools(this.tmpRoot, this.spoolDir);
    // Touched while the process lives, and the folders of processes gone swept (see STALE_SPOOL_MS).
    this.spoolTimer = setInterval(() => {
      const now = new Date();
      void utimes(this.spoolDir, now, now)
        .then(() => removeStaleSpools(this.tmpRoot, this.spoolDir))
        .catch(() => {});
    }, SPOOL_TOUCH_MS);
    this.spoolTimer.unref();
  }

  async close(): Promise<void> {
    if (this.spoolTimer) clearInterval(this.spoolTimer);
    this.spoolTimer = null;
    const open = [...this.openPacks.values()];
    this.openPacks.clear();
    await Promise.all(open.map(async (p) => (await p.catch(() => null))?.fh.close().catch(() => {})));
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

  /** `narinfo/`, for the narinfo files `putNarinfo` and `readyNarinfos` link (the layout before packs). */
  private async makeNarinfoFolder(): Promise<void> {
    if (this.narinfoFolder) return;
    await mkdir(this.narinfoDir, { recursive: true });
    this.narinfoFolder = true;
  }

  /** Where a narinfo is packed, looking for packs of other writers when this process knows of none. */
  private async packedNarinfo(hash: string): Promise<Packed | undefined> {
    const known = this.packedNarinfos.get(hash);
    if (known) return known;
    await this.scanPacks();
    return this.packedNarinfos.get(hash);
  }

  async getNarinfo(hash: string): Promise<NarinfoObject | null> {
    for (let packed = await this.packedNarinfo(hash); packed; packed = this.packedNarinfos.get(hash)) {
      const path = join(this.packDir, packed.pack);
      // Its version is what it is now (a narinfo is read from disk once per entry and version).
      const got = await this.readPacked(packed, true);
      if (got === 'short') {
        this.onProblem({
          code: 'CACHE_STORAGE_CORRUPT',
          message: `the cache pack ${path} ends before the narinfo ${hash} it indexes (truncated); the narinfo is no longer served and the next push of its path uploads it again`,
          location: path,
        });
      } else if (got) return { text: got.bytes.toString('utf8'), version: packVersion(packed, got.stats) };
      // Gone (removed by hand) or truncated: the next copy, if another pack holds one.
      this.dropNarinfo(hash, packed);
    }
    if (!this.narinfoFolder) return null;
    const file = this.narinfoPath(hash);
    const st = await statOrNull(file);
    if (!st || this.condemnedFiles.get(hash) === `${st.mtimeMs}:${st.size}`) return null;
    const text = await readFile(file, 'utf8').catch(nullOnMissing);
    return text === null ? null : { text, version: `${st.mtimeMs}:${st.size}` };
  }

  async narinfoVersion(hash: string): Promise<string | null> {
    // A pack is never rewritten once published; its stat still shows a hand edit, as a narinfo file's does.
    const packed = this.packedNarinfos.get(hash);
    const st = await statOrNull(packed ? join(this.packDir, packed.pack) : this.narinfoPath(hash));
    if (packed) return st ? packVersion(packed, st) : null;
    const version = st ? `${st.mtimeMs}:${st.size}` : null;
    return version === this.condemnedFiles.get(hash) ? null : version;
  }

  async putNarinfo(hash: string, text: string): Promise<boolean> {
    if (await this.packedNarinfo(hash)) return false;
    const tmp = this.tmpPath(`${hash}.narinfo`);
    await this.makeNarinfoFolder();
    await writeFile(tmp, text, { mode: 0o644, flush: true });
    try {
      // link, not rename: an existing narinfo (another coordinator's) is never replaced.
      await link(tmp, this.narinfoPath(hash));
      this.linkedNarinfos = true;
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
      await this.makeNarinfoFolder();
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
            if (await this.packedNarinfo(hash)) {
              out.push(false);
              continue;
            }
            try {
              await link(tmps[i]!, this.narinfoPath(hash));
              this.linkedNarinfos = true;
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

  /**
   * One pack for the group (see the module header): its small NARs (bytes in memory) and every narinfo,
   * written and synced in the temp folder while the large NARs are synced and moved into `nar/`.
   */
  async storeGroup(
    nars: readonly NarPut[],
    narinfos: readonly { hash: string; text: string }[],
  ): Promise<ReadyNarinfos> {
    const loose = nars.filter((n) => !('data' in n));
    const parts: Buffer[] = [];
    const index: PackIndex = { nars: [], narinfos: [] };
    let at = 0;
    const packedNames = new Set<string>();
    for (const n of nars) {
      // Two paths of one group may have the same NAR bytes (one name): stored once.
      if (!('data' in n) || packedNames.has(n.file)) continue;
      packedNames.add(n.file);
      index.nars.push([n.file, at, n.data.length]);
      parts.push(n.data);
      at += n.data.length;
    }
    const texts = narinfos.map(({ text }) => Buffer.from(text, 'utf8'));
    for (const [i, { hash }] of narinfos.entries()) {
      index.narinfos.push([hash, at, texts[i]!.length]);
      at += texts[i]!.length;
    }
    const tmp = this.tmpPath('pack');
    const [packed, moved] = await Promise.allSettled([
      writeSynced(tmp, [...parts, ...texts, ...indexAndTrailer(index)]),
      this.putNars(loose),
    ]);
    if (packed.status === 'rejected' || moved.status === 'rejected') {
      await unlink(tmp).catch(() => {});
      throw packed.status === 'rejected' ? packed.reason : (moved as PromiseRejectedResult).reason;
    }
    const drop = async () => {
      await unlink(tmp).catch(() => {});
    };
    return { publish: (keep) => this.publishPack(tmp, index, at, keep).finally(drop), drop };
  }

  /**
   * Renames a group's pack into `pack/`, publishing the kept narinfos no writer published before; when
   * that is not all of them, the pack's index is rewritten (and synced) first without the others.
   */
  private async publishPack(
    tmp: string,
    index: PackIndex,
    indexAt: number,
    keep: readonly boolean[],
  ): Promise<boolean[]> {
    const kept = index.narinfos.filter((_, i) => keep[i]);
    // Published already: by this process, by another coordinator (its packs, or a narinfo file).
    await this.scanPacks();
    const filed = await Promise.all(
      kept.map(([hash]) =>
        this.packedNarinfos.has(hash) || this.publishing.has(hash) ? true : this.narinfoFiled(hash),
      ),
    );
    // From here to the rename's start nothing awaits: two publishes in this process never both win.
    const won = kept.map(
      ([hash], i) => !filed[i] && !this.packedNarinfos.has(hash) && !this.publishing.has(hash),
    );
    const published = kept.filter((_, i) => won[i]);
    if (published.length === 0) return won;
    if (published.length < index.narinfos.length) {
      index = { nars: index.nars, narinfos: published };
      await rewriteIndex(tmp, indexAt, index);
    }
    for (const [hash] of published) this.publishing.add(hash);
    const name = `${Date.now().toString(36)}-${randomBytes(8).toString('hex')}.pack`;
    try {
      await rename(tmp, join(this.packDir, name));
    } finally {
      for (const [hash] of published) this.publishing.delete(hash);
    }
    this.addPack(name, index);
    return won;
  }

  /**
   * Adds a pack's entries to the index; an entry known already (from an earlier pack) stays as it is,
   * the new copy kept behind it in case it is found corrupt.
   */
  private addPack(name: string, index: PackIndex): void {
    this.packs.add(name);
    for (const [file, at, size] of index.nars)
      addPacked(this.packedNars, this.shadowedNars, file, { pack: name, at, size });
    for (const [hash, at, size] of index.narinfos) {
      addPacked(this.packedNarinfos, this.shadowedNarinfos, hash, { pack: name, at, size });
      this.droppedNarinfos.delete(hash);
    }
  }

  /** Forgets a copy of a packed narinfo (see dropPacked), remembering the hash when none is left. */
  private dropNarinfo(hash: string, packed: Packed): void {
    dropPacked(this.packedNarinfos, this.shadowedNarinfos, hash, packed);
    if (!this.packedNarinfos.has(hash)) this.droppedNarinfos.add(hash);
  }

  /**
   * Reads the packs in `pack/` this process has not read yet (another coordinator's), unless the folder
   * did not change since the last listing. One at a time: a call while one runs waits for the next.
   */
  private scanPacks(): Promise<void> {
    if (!this.scanning) {
      this.scanning = this.scanOnce().finally(() => {
        this.scanning = null;
      });
      return this.scanning;
    }
    this.scanQueued ??= this.scanning
      .catch(() => {})
      .then(() => {
        this.scanQueued = null;
        return this.scanPacks();
      });
    return this.scanQueued;
  }

  private async scanOnce(): Promise<void> {
    const [st, folder] = await Promise.all([statOrNull(this.packDir), statOrNull(this.narinfoDir)]);
    this.narinfoFolder ||= folder !== null;
    if (!st) return;
    if (st.mtimeMs === this.listed.mtimeMs && this.listed.at - st.mtimeMs > SETTLED_MS) return;
    const at = Date.now();
    const fresh = (await readdir(this.packDir)).filter((n) => n.endsWith('.pack') && !this.packs.has(n));
    // A slice at a time: a large cache shares the event loop and the file descriptors.
    for (let i = 0; i < fresh.length; i += 64) {
      const read = await Promise.all(fresh.slice(i, i + 64).map((n) => readPackIndex(join(this.packDir, n))));
      read.forEach((index, j) => {
        const name = fresh[i + j]!;
        if (index) this.addPack(name, index);
        else {
          this.packs.add(name);
          this.onProblem({
            code: 'CACHE_STORAGE_CORRUPT',
            message: `the cache pack ${join(this.packDir, name)} is not a whole pack (truncated, or its index is damaged); its paths are not served and the next push of them uploads them again`,
            location: join(this.packDir, name),
          });
        }
      });
    }
    this.listed = { mtimeMs: st.mtimeMs, at };
  }

  async syncPublished(): Promise<void> {
    await Promise.all([syncDir(this.packDir), this.linkedNarinfos ? syncDir(this.narinfoDir) : undefined]);
  }

  async condemnNarinfo(hash: string, version: string): Promise<void> {
    const packed = this.packedNarinfos.get(hash);
    if (packed) {
      if (version.startsWith(`pack:${packed.pack}:`)) this.dropNarinfo(hash, packed);
      return;
    }
    if (version.startsWith('pack:')) return;
    this.condemnedFiles.set(hash, version);
  }

  /** Whether a narinfo file (the layout before packs) is there and served. */
  private async narinfoFiled(hash: string): Promise<boolean> {
    if (!this.narinfoFolder) return false;
    const st = await statOrNull(this.narinfoPath(hash));
    return st !== null && this.condemnedFiles.get(hash) !== `${st.mtimeMs}:${st.size}`;
  }

  async deleteNarinfo(hash: string): Promise<void> {
    if (this.packedNarinfos.has(hash))
      throw new Error(`the narinfo ${hash} is in a pack, whose narinfos are not deleted one by one`);
    await unlink(this.narinfoPath(hash)).catch(nullOnMissing);
  }

  async listNarinfos(): Promise<string[]> {
    await this.scanPacks();
    const filed = (await readdir(this.narinfoDir).catch((err) => nullOnMissing(err) ?? []))
      .filter((f) => f.endsWith('.narinfo'))
      .map((f) => f.slice(0, -8))
      .filter((h) => !this.packedNarinfos.has(h) && !this.droppedNarinfos.has(h));
    return [...this.packedNarinfos.keys(), ...this.droppedNarinfos, ...filed];
  }

  /**
   * A NAR file as is from `nar/`, or a packed NAR read whole (a small one) and checked against its name
   * (the nix-base32 sha256 of its bytes): a copy that does not match is never served, and the narinfos
   * of its pack that name it are no longer served either (the next push uploads their paths again).
   */
  async getNar(file: string): Promise<NarObject | null> {
    if (!this.packedNars.has(file)) {
      const path = join(this.narDir, file);
      const st = await statOrNull(path);
      if (st?.isFile()) return { size: st.size, stream: this.looseNar(path, file, st) };
      await this.scanPacks();
    }
    let corrupt: string | null = null;
    for (let packed = this.packedNars.get(file); packed; packed = this.packedNars.get(file)) {
      const path = join(this.packDir, packed.pack);
      const got = await this.readPacked(packed, false);
      if (got && got !== 'short') {
        // Hashed again only when the pack changed since (a write changes its mtime; its stat is looked
        // at again PACK_RECHECK_MS after the last look): a NAR many agents fetch costs its hash once.
        const seen = `${got.stats.mtimeMs}:${got.stats.size}`;
        if (this.verifiedNars.get(packed) === seen || nameOfBytes(got.bytes, file) === file) {
          this.verifiedNars.set(packed, seen);
          return new BufferedNar(got.bytes);
        }
      }
      dropPacked(this.packedNars, this.shadowedNars, file, packed);
      if (got === null) continue; // the pack was removed by hand
      corrupt = path;
      const hidden = await this.hideNarinfosNaming(packed.pack, file);
      this.onProblem({
        code: 'CACHE_STORAGE_CORRUPT',
        message: `the NAR ${file} in the cache pack ${path} is ${got === 'short' ? 'cut short (the pack is truncated)' : 'not the bytes its name hashes'}; it is not served, nor are the narinfos naming it in that pack (${hidden.join(', ') || 'none'}): push their paths again`,
        location: path,
      });
    }
    if (corrupt === null) return null;
    const path = join(this.narDir, file);
    const st = await statOrNull(path);
    if (st?.isFile()) return { size: st.size, stream: this.looseNar(path, file, st) };
    throw new CacheError(
      'CACHE_STORAGE_CORRUPT',
      500,
      `the NAR ${file} is corrupt in the cache pack ${corrupt}; push the paths that name it again`,
    );
  }

  /**
   * A NAR file of `nar/` (a large upload) streamed out and hashed on the way until it was once found
   * whole: its last chunk is held back until the hash matches its name, so a damaged file never reaches
   * a client whole (the transfer breaks short of its length, and the log says CACHE_STORAGE_CORRUPT).
   */
  private looseNar(path: string, file: string, st: Stats): Readable {
    const seen = `${st.mtimeMs}:${st.size}`;
    if (this.fileFindings.isWhole(file, seen)) return createReadStream(path);
    const check = narNameCheck(file, (whole) => {
      if (whole) {
        this.fileFindings.foundWhole(file, seen);
        return undefined;
      }
      this.fileFindings.foundDamaged(file, seen);
      this.onProblem({
        code: 'CACHE_STORAGE_CORRUPT',
        message: `the NAR file ${path} is not the bytes its name hashes; its transfer was broken off, the narinfos naming it are no longer served, and the next push of their paths uploads it again`,
        location: path,
        nar: file,
      });
      return new CacheError(
        'CACHE_STORAGE_CORRUPT',
        500,
        `the NAR ${file} is corrupt in the cache's storage`,
      );
    });
    return pipeline(createReadStream(path), check, () => {});
  }

  /**
   * A pack's open descriptor and its stat, or null when the pack is gone. Opened once and kept; its
   * stat is looked at again (fstat) when `fresh`, or on a read PACK_RECHECK_MS after the last look, so
   * a pack changed in place (a hand edit, a truncation) has its NARs hashed again within that time. A
   * pack removed or replaced by hand (no link left to the open file) is opened again by name.
   */
  private async packHandle(pack: string, fresh: boolean): Promise<OpenPack | null> {
    let opening = this.openPacks.get(pack);
    if (!opening) {
      if (this.openPacks.size >= OPEN_PACKS_MAX) {
        // The first opened goes (FileHandle.close waits for the reads under way on it).
        const [first, oldest] = this.openPacks.entries().next().value as [string, Promise<OpenPack | null>];
        this.openPacks.delete(first);
        void oldest.then((p) => p?.fh.close()).catch(() => {});
      }
      opening = openPack(join(this.packDir, pack));
      this.openPacks.set(pack, opening);
      // A failed open (not ENOENT) is tried again next time.
      opening.catch(() => {
        if (this.openPacks.get(pack) === opening) this.openPacks.delete(pack);
      });
    }
    const open = await opening;
    if (!open) {
      if (this.openPacks.get(pack) === opening) this.openPacks.delete(pack);
      return null;
    }
    if (!fresh && Date.now() - open.checkedAt < PACK_RECHECK_MS) return open;
    const stats = await open.fh.stat();
    if (stats.nlink > 0) {
      open.stats = stats;
      open.checkedAt = Date.now();
      return open;
    }
    // Removed (or renamed over) since it was opened: what its name holds now, if anything.
    if (this.openPacks.get(pack) === opening) this.openPacks.delete(pack);
    void open.fh.close().catch(() => {});
    return this.packHandle(pack, true);
  }

  /** Bytes of a packed entry, with its pack's stat; null when the pack is gone, 'short' when it ends before them. */
  private async readPacked(
    { pack, at, size }: Packed,
    fresh: boolean,
  ): Promise<{ bytes: Buffer; stats: Stats } | null | 'short'> {
    const open = await this.packHandle(pack, fresh);
    if (!open) return null;
    if (open.stats.size < at + size) return 'short';
    const bytes = Buffer.allocUnsafe(size);
    let read: number;
    try {
      read = await readUpTo(open.fh, bytes, at);
    } catch (err) {
      // Closed meanwhile (past OPEN_PACKS_MAX): read again through a new one.
      if (open.fh.fd === -1) return this.readPacked({ pack, at, size }, fresh);
      throw err;
    }
    // Cut short since the last look at its stat.
    if (read < size) return 'short';
    return { bytes, stats: open.stats };
  }

  narFoundCorrupt(file: string): boolean {
    const seen = this.fileFindings.damagedAt(file);
    if (seen === undefined) return false;
    // Replaced since (a push moved a new upload in under its name): whole until found otherwise.
    const st = statSyncOrNull(join(this.narDir, file));
    if (st && `${st.mtimeMs}:${st.size}` === seen) return true;
    this.fileFindings.forgetDamage(file);
    return false;
  }

  /** Stops serving the narinfos of a pack that name a NAR of it found corrupt; their hash parts. */
  private async hideNarinfosNaming(pack: string, file: string): Promise<string[]> {
    const path = join(this.packDir, pack);
    const index = await readPackIndex(path).catch(() => null);
    const hidden: string[] = [];
    const ours = [...this.packedNarinfos].filter(([, p]) => p.pack === pack);
    for (const [hash, packed] of ours) {
      const got = index ? await this.readPacked(packed, true).catch(() => null) : null;
      // A pack whose index cannot be read any more: none of its narinfos is trusted.
      const names =
        got && got !== 'short' ? got.bytes.toString('utf8').includes(`\nURL: nar/${file}\n`) : true;
      if (!names) continue;
      this.dropNarinfo(hash, packed);
      hidden.push(hash);
    }
    return hidden;
  }

  /** The NAR files in `nar/` (large uploads, and every NAR of the old layout); packed NARs live and go with their pack. */
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
    if (this.packedNars.has(file)) return true;
    if ((await statOrNull(join(this.narDir, file)))?.isFile()) return true;
    await this.scanPacks();
    return this.packedNars.has(file);
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

/** A pack's index and trailer (spec/cache-pack.ts), the last bytes of the file. */
function indexAndTrailer(index: PackIndex): Buffer[] {
  const json = Buffer.from(JSON.stringify(index), 'utf8');
  const trailer = Buffer.alloc(PACK_TRAILER_BYTES);
  trailer.write(PACK_MAGIC, 0, 'latin1');
  trailer.writeUInt32BE(json.length, PACK_MAGIC.length);
  return [json, trailer];
}

/** A new file of these bytes, synced before it is closed. */
async function writeSynced(path: string, parts: readonly Buffer[]): Promise<void> {
  const fh = await open(path, 'wx', 0o644);
  try {
    await writeAll(fh, parts, 0);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

/** Writes `parts` from `position` on, at most 512 buffers a call (writev takes at most IOV_MAX). */
async function writeAll(fh: FileHandle, parts: readonly Buffer[], position: number): Promise<void> {
  let rest = parts.filter((b) => b.length > 0);
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest.slice(0, 512), position);
    if (bytesWritten === 0) throw new Error('the file system took no bytes');
    position += bytesWritten;
    // A short write (a full disk, a signal) goes on where it stopped.
    let n = bytesWritten;
    let k = 0;
    while (k < rest.length && n >= rest[k]!.length) n -= rest[k++]!.length;
    rest = rest.slice(k);
    if (n > 0) rest[0] = rest[0]!.subarray(n);
  }
}

/** Replaces a pack's index (written from `indexAt` on) and syncs it. */
async function rewriteIndex(path: string, indexAt: number, index: PackIndex): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const parts = indexAndTrailer(index);
    await writeAll(fh, parts, indexAt);
    await fh.truncate(indexAt + parts[0]!.length + parts[1]!.length);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

/** A pack's index, or null when the file is not a whole pack. */
export async function readPackIndex(path: string): Promise<PackIndex | null> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const { size } = await fh.stat();
    if (size < PACK_TRAILER_BYTES) return null;
    const trailer = await readExactly(fh, size - PACK_TRAILER_BYTES, PACK_TRAILER_BYTES);
    if (trailer.toString('latin1', 0, PACK_MAGIC.length) !== PACK_MAGIC) return null;
    const length = trailer.readUInt32BE(PACK_MAGIC.length);
    const indexAt = size - PACK_TRAILER_BYTES - length;
    if (indexAt < 0) return null;
    let json: unknown;
    try {
      json = JSON.parse((await readExactly(fh, indexAt, length)).toString('utf8'));
    } catch {
      return null;
    }
    const parsed = PackIndex.safeParse(json);
    if (!parsed.success) return null;
    const inside = ([, at, n]: [string, number, number]) => at + n <= indexAt;
    return parsed.data.nars.every(inside) && parsed.data.narinfos.every(inside) ? parsed.data : null;
  } finally {
    await fh.close();
  }
}

async function readExactly(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  if ((await readUpTo(fh, buf, position)) < length) throw new Error('the file ended early');
  return buf;
}

/** Fills `buf` from `position` on; the bytes read, fewer than its length when the file ends first. */
async function readUpTo(fh: FileHandle, buf: Buffer, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** A pack kept open (see DirectoryStorage.packHandle): its descriptor, its stat, and when that was taken. */
interface OpenPack {
  fh: FileHandle;
  stats: Stats;
  checkedAt: number;
}

/** How long an open pack's stat is taken as it is before a read looks at it again. */
const PACK_RECHECK_MS = 1000;
/** Packs kept open at most (one descriptor each); past it the first opened is closed. */
const OPEN_PACKS_MAX = 1024;

async function openPack(path: string): Promise<OpenPack | null> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    return nullOnMissing(err);
  }
  try {
    return { fh, stats: await fh.stat(), checkedAt: Date.now() };
  } catch (err) {
    await fh.close().catch(() => {});
    throw err;
  }
}

/** A file's stat, or null when it is not there (rare calls: a NAR found damaged). */
function statSyncOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

/** Indexes a packed entry: first come first served, later copies kept behind it. */
function addPacked(
  served: Map<string, Packed>,
  shadowed: Map<string, Packed[]>,
  key: string,
  packed: Packed,
): void {
  if (!served.has(key)) served.set(key, packed);
  else {
    const behind = shadowed.get(key);
    if (behind) behind.push(packed);
    else shadowed.set(key, [packed]);
  }
}

/** Forgets a packed entry's copy (found corrupt, or its pack gone); the next copy, if any, is served. */
function dropPacked(
  served: Map<string, Packed>,
  shadowed: Map<string, Packed[]>,
  key: string,
  packed: Packed,
): void {
  if (served.get(key) !== packed) return;
  const next = shadowed.get(key)?.shift();
  if (next) served.set(key, next);
  else served.delete(key);
  if (shadowed.get(key)?.length === 0) shadowed.delete(key);
}

/** A packed narinfo's version: its pack's name and stat. */
function packVersion(packed: Packed, st: Stats): string {
  return `pack:${packed.pack}:${st.mtimeMs}:${st.size}`;
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

/**
 * Removes the temp folders under `root` (named `<host>-<pid>-<random>`) of processes that are gone (see
 * STALE_SPOOL_MS): never `keep` (this process's own) nor one of a live process of this host.
 */
export async function removeStaleSpools(root: string, keep: string): Promise<void> {
  const now = Date.now();
  const host = hostname();
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const p = join(root, name);
    if (p === keep) continue;
    const owner = /^(.+)-(\d+)-[0-9a-f]{8}$/.exec(name);
    const here = owner?.[1] === host;
    if (here && processRuns(Number(owner[2]))) continue;
    const st = await statOrNull(p);
    if (st && now - st.mtimeMs > (here ? GONE_SPOOL_MS : STALE_SPOOL_MS))
      await rm(p, { recursive: true, force: true }).catch(() => {});
  }
}

/** Whether a process of this id runs on this host (one of another user counts). */
function processRuns(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
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
