/**
 * Where the binary cache keeps its objects: narinfos (`<hash>.narinfo`) and compressed NARs
 * (`nar/<file>`). A path is in the cache exactly when its narinfo exists, so a NAR is stored before
 * its narinfo and a narinfo is published once, never replaced.
 */
import { Readable } from 'node:stream';

export interface NarinfoObject {
  text: string;
  /** Changes when the object changes (mtime and size, or an ETag); for revalidating a copy in memory. */
  version: string;
}

export interface NarObject {
  /** Bytes of the compressed NAR. */
  size: number;
  stream: Readable;
  /** The bytes themselves, when the storage read them whole (a packed NAR): sent as they are, no stream. */
  readonly bytes?: Buffer;
}

/**
 * A NAR read whole into memory (a packed one, a small object checked before it is served): the route
 * sends `bytes` as they are (one write, no stream); a caller that wants a stream gets one made of them.
 */
export class BufferedNar implements NarObject {
  constructor(readonly bytes: Buffer) {}
  get size(): number {
    return this.bytes.length;
  }
  get stream(): Readable {
    return Readable.from([this.bytes], { objectMode: false });
  }
}

/** A NAR to store as `nar/<file>`: from a spool file (gone afterwards) or from its bytes. */
export type NarPut = { file: string; spooled: string } | { file: string; data: Buffer };

/** Narinfos made ready by `readyNarinfos`, not yet visible. */
export interface ReadyNarinfos {
  /**
   * Publishes the ones whose `keep` is true, in order, each as `putNarinfo` would (one answer for each
   * of them), and drops the others. Visible at once; on disk for sure once `syncPublished` resolved.
   */
  publish(keep: readonly boolean[]): Promise<boolean[]>;
  /** Publishes none of them. */
  drop(): Promise<void>;
}

/** Something a storage or the store found broken in what it holds: a coded problem for the coordinator's log. */
export interface StorageProblem {
  code: 'CACHE_STORAGE_CORRUPT';
  message: string;
  /** The file (or object) found broken. */
  location: string;
  /** The NAR (its name under `nar/`) found broken, when it is one: the narinfos naming it are not served. */
  nar?: string;
}

export interface CacheStorage {
  /** Where the objects live, for logs and errors; never carries a credential. */
  readonly location: string;
  /**
   * A local folder of this process's own (no other process writes there) where an upload is spooled
   * while it is checked, before `putNar` moves it into the storage.
   */
  readonly spoolDir: string;
  /** Prepares the storage and checks it can be reached; fails with a coded CacheError otherwise. */
  init(): Promise<void>;
  close(): Promise<void>;

  getNarinfo(hash: string): Promise<NarinfoObject | null>;
  /** The narinfo's version without reading it, or null when there is none. */
  narinfoVersion(hash: string): Promise<string | null>;
  /**
   * Publishes a narinfo unless one exists already. False when another writer (another coordinator
   * sharing the storage) published this hash first: the caller reads that one back.
   */
  putNarinfo(hash: string, text: string): Promise<boolean>;
  /**
   * `putNarinfo` for several, in two steps: the narinfos made ready without being published (a
   * directory writes and syncs them as temp files, side by side), so a batch readies a group while the
   * groups before it publish; then published in the given order (references before referrers).
   */
  readyNarinfos(items: readonly { hash: string; text: string }[]): Promise<ReadyNarinfos>;
  /**
   * A batch upload's group: stores its NARs and makes their narinfos ready, in one wait, nothing visible
   * yet; `publish` then makes the kept narinfos visible as `readyNarinfos`' does (a referrer never before
   * its references). A bucket does `putNars` and `readyNarinfos` side by side (`storeSideBySide`); a
   * directory writes the small NARs and every narinfo into one pack file (storage-dir.ts). Whatever
   * fails, nothing is left ready.
   */
  storeGroup(
    nars: readonly NarPut[],
    narinfos: readonly { hash: string; text: string }[],
  ): Promise<ReadyNarinfos>;
  /**
   * Makes the narinfos this process published through `readyNarinfos` or `storeGroup` durable (a
   * directory syncs the folders it published into once, for all of an upload's groups; a bucket's writes
   * are durable when answered). An upload is answered only after it.
   */
  syncPublished(): Promise<void>;
  deleteNarinfo(hash: string): Promise<void>;
  /**
   * Stops serving a narinfo found corrupt at this version (CacheStore checks each one it reads), so an
   * upload of its path can publish it again (a directory in a new pack, a bucket over that very object
   * with `If-Match`); another copy (another pack holding it) is served instead. A storage without it
   * serves such a narinfo as not there, and an upload of its path cannot repair it.
   */
  condemnNarinfo?(hash: string, version: string): Promise<void>;
  /**
   * Whether a NAR (its name under `nar/`) was found broken as it lies now: its narinfos are not served.
   * Asked only when a narinfo is read from the storage; a bucket looks the object's ETag up when it found one.
   */
  narFoundCorrupt?(file: string): boolean | Promise<boolean>;
  /** Where the storage says what it found broken (CacheStore sets it; a warning otherwise). */
  onProblem?: (problem: StorageProblem) => void;
  /** The hash parts of every narinfo. */
  listNarinfos(): Promise<string[]>;

  getNar(file: string): Promise<NarObject | null>;
  /** Every stored NAR (its name under `nar/`) and when it was last written, in ms since the epoch. */
  listNars(): Promise<{ file: string; modifiedMs: number }[]>;
  hasNar(file: string): Promise<boolean>;
  /**
   * Moves a checked upload (a file in `spoolDir`) into the storage as `nar/<file>`; the local file is
   * gone afterwards. NAR names are content hashes, so concurrent writers of one name write the same bytes.
   */
  putNar(file: string, spooled: string): Promise<void>;
  /**
   * `putNar` for several at once (a batch upload's group), each from its spool file or, for a small
   * one, from its bytes in memory: a directory writes and syncs them together, then moves them in.
   */
  putNars(items: readonly NarPut[]): Promise<void>;
  deleteNar(file: string): Promise<void>;
}

/** `storeGroup` as `putNars` and `readyNarinfos` side by side: one wait; a failure leaves nothing ready. */
export async function storeSideBySide(
  storage: Pick<CacheStorage, 'putNars' | 'readyNarinfos'>,
  nars: readonly NarPut[],
  narinfos: readonly { hash: string; text: string }[],
): Promise<ReadyNarinfos> {
  const [stored, ready] = await Promise.allSettled([storage.putNars(nars), storage.readyNarinfos(narinfos)]);
  if (stored.status === 'rejected') {
    if (ready.status === 'fulfilled') await ready.value.drop();
    throw stored.reason;
  }
  if (ready.status === 'rejected') throw ready.reason;
  return ready.value;
}
