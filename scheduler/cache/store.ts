/**
 * The cache's paths over a storage (a directory or an S3 bucket, see storage.ts): lookups with an
 * in-memory index of narinfos, and uploads checked, signed and published narinfo last.
 */
import {
  fingerprint,
  hashPart,
  type NarInfo,
  parseNarInfo,
  STORE_DIR,
  STORE_HASH_RE,
  storeBasename,
} from '../../lib/nar-info.js';
import { formatSha256 } from '../../lib/nix-base32.js';
import { CacheError } from './errors.js';
import {
  type CacheCompression,
  type ClaimPaths,
  discardStaged,
  type IngestClaim,
  type IngestResult,
  ingestNar,
  pathConflict,
  publishReady,
  type ReadyGroup,
  type StagedNar,
  type StagedPaths,
  stageNar,
  storeAndReady,
} from './ingest.js';
import { type CacheKey, signedByKey } from './key.js';
import type { CacheStorage, NarObject, NarPut, StorageProblem } from './storage.js';

/** Compressed NAR file names we serve: `<nix base32>.nar` plus a known compression suffix. */
const NAR_FILE_RE = /^[0-9a-z]{52}\.nar(\.(br|xz|bz2|zst))?$/;

export interface CacheStoreOptions {
  /** Largest uncompressed NAR accepted, in bytes. */
  maxNarBytes?: number;
  /** How NARs are stored (see ingest.ts CacheCompression); default `none`. */
  compression?: CacheCompression;
  /** Brotli quality 0–11 with `br`; higher is smaller and much slower. */
  brotliQuality?: number;
  /** How long a narinfo held in memory is served without checking the storage; default 1000 ms. */
  narinfoRevalidateMs?: number;
  /** Where a narinfo or NAR found corrupt in the storage is said (the coordinator's log); a warning by default. */
  onCorrupt?: (problem: StorageProblem) => void;
}

export const DEFAULT_MAX_NAR_BYTES = 8 * 1024 ** 3;

/** Paths looked up at once by `missing`. */
const MISSING_SLICE = 256;

/** How long a count of the cache's paths is reused (see `count`). */
const COUNT_TTL_MS = 10_000;

/**
 * How old a NAR no narinfo references must be before it is collected. A NAR is stored just before its
 * narinfo is published (seconds, and a claim lives 10 minutes), so an orphan this old is one whose
 * narinfo never came: its upload failed after storing it, or its coordinator died.
 */
export const ORPHAN_NAR_GRACE_MS = 86_400_000;

/** Narinfos kept in memory (a few hundred bytes each). */
const NARINFO_CACHE_ENTRIES = 200_000;

interface Published {
  text: string;
  info: NarInfo;
  /** The storage's version of the narinfo; '' when unknown (the next check re-reads it). */
  version: string;
  checkedAt: number;
}

export class CacheStore {
  readonly maxNarBytes: number;
  readonly compression: CacheCompression;
  readonly brotliQuality: number;
  readonly narinfoRevalidateMs: number;

  constructor(
    readonly storage: CacheStorage,
    readonly key: CacheKey,
    opts: CacheStoreOptions = {},
  ) {
    this.maxNarBytes = opts.maxNarBytes ?? DEFAULT_MAX_NAR_BYTES;
    // Measured (issue 17): quality 2 compresses binaries about as well as 4 (busybox 54 % vs 56 %,
    // node 35 % vs 33 %) at ~100 MiB/s instead of ~28 MiB/s, which made compression the push's bottleneck.
    this.brotliQuality = opts.brotliQuality ?? 2;
    this.compression = opts.compression ?? 'none';
    this.narinfoRevalidateMs = opts.narinfoRevalidateMs ?? 1000;
    this.onCorrupt =
      opts.onCorrupt ?? ((p: StorageProblem) => process.emitWarning(p.message, { code: p.code }));
    storage.onProblem = (p) => {
      // The narinfos naming a damaged NAR are read again (and then not served: brokenNarinfo).
      if (p.nar)
        for (const [hash, e] of this.published)
          if (e.info.url === `nar/${p.nar}`) this.published.delete(hash);
      this.onCorrupt(p);
    };
  }

  private readonly onCorrupt: (problem: StorageProblem) => void;

  /** Prepares the storage (folders, reachability) and drops day-old temp files of crashed uploads. */
  async init(): Promise<void> {
    await this.storage.init();
  }

  async close(): Promise<void> {
    await this.storage.close();
  }

  /** Where this process spools uploads while checking them. */
  get spoolDir(): string {
    return this.storage.spoolDir;
  }

  /**
   * The narinfo text for a hash part, or null. Narinfo lookups are the hot path of every substitution
   * and of every push (references, `missing`), so narinfos are kept in memory and revalidated at most
   * every `narinfoRevalidateMs` with a cheap version check (re-read only when it changed, forgotten
   * when gone). Misses are not remembered: the path may be uploaded a moment later, here or by another
   * coordinator sharing the storage.
   */
  async narinfoText(hash: string): Promise<string | null> {
    return (await this.lookup(hash))?.text ?? null;
  }

  /**
   * The narinfo text when it is in memory and was checked recently, with no I/O at all (the route's
   * fast path); otherwise null, and the caller asks `narinfoText`.
   */
  cachedNarinfo(hash: string): { text: string } | null {
    const hit = this.published.get(hash);
    return hit && Date.now() - hit.checkedAt < this.narinfoRevalidateMs ? hit : null;
  }

  /**
   * `revalidate` false (the upload side: references, `missing`, conflicts) takes any remembered
   * narinfo as is: a published path is never replaced, so only a hand edit could make it stale.
   */
  private async lookup(hash: string, revalidate = true): Promise<Published | null> {
    if (!STORE_HASH_RE.test(hash)) return null;
    const hit = this.published.get(hash);
    if (hit && (!revalidate || Date.now() - hit.checkedAt < this.narinfoRevalidateMs)) return hit;
    if (hit?.version) {
      const version = await this.storage.narinfoVersion(hash);
      if (version === hit.version) {
        hit.checkedAt = Date.now();
        return hit;
      }
      if (version === null) {
        this.published.delete(hash);
        return null;
      }
    }
    // A copy found corrupt is condemned and the next one read (another pack may hold the path too).
    for (let copies = 0; copies < 8; copies++) {
      const obj = await this.storage.getNarinfo(hash);
      if (!obj) break;
      const broken = await this.brokenNarinfo(hash, obj.text);
      if (!broken) return this.remember(hash, obj.text, parseNarInfo(obj.text), obj.version);
      this.onCorrupt({
        code: 'CACHE_STORAGE_CORRUPT',
        message: `the narinfo ${hash} in the cache's storage (${this.storage.location}) ${broken}; it is not served, and the next push of its path uploads it again`,
        location: `${this.storage.location} narinfo ${hash}`,
      });
      if (!this.storage.condemnNarinfo) break;
      await this.storage.condemnNarinfo(hash, obj.version);
    }
    this.published.delete(hash);
    return null;
  }

  /**
   * Why a narinfo read from the storage cannot be served (its text damaged on disk: a bit flipped, a
   * pack's index pointing elsewhere), or null when it is whole: it parses, names a path of this hash
   * part, and a signature by a key of this cache's name verifies (one signed by an earlier key of that
   * name is refused too: nix trusting the current key would refuse it, and a push signs it again).
   */
  private async brokenNarinfo(hash: string, text: string): Promise<string | null> {
    let info: NarInfo;
    try {
      info = parseNarInfo(text);
    } catch (err) {
      return `is unreadable (${(err as Error).message})`;
    }
    const base = storeBasename(info.storePath);
    if (!base || hashPart(base) !== hash) return `names another path (${JSON.stringify(info.storePath)})`;
    if (info.url.startsWith('nar/') && (await this.storage.narFoundCorrupt?.(info.url.slice(4))))
      return `names the NAR ${info.url}, found damaged`;
    if (signedByKey(this.key, fingerprint(info), info.sigs) === false)
      return `does not verify with this cache's key ${this.key.publicKey} (damaged on disk, or signed by another key of the name ${this.key.name})`;
    return null;
  }

  /** Records a narinfo read from the storage or just published (version unknown: the next check re-reads it). */
  remember(hash: string, text: string, info: NarInfo, version = ''): Published {
    if (this.published.size >= NARINFO_CACHE_ENTRIES) this.published.clear();
    const entry = { text, info, version, checkedAt: Date.now() };
    this.published.set(hash, entry);
    return entry;
  }

  private readonly published = new Map<string, Published>();

  /**
   * Deletes the NARs no narinfo references that were written longer than `graceMs` ago (orphans: see
   * ORPHAN_NAR_GRACE_MS); returns their names. The NARs are listed before the narinfos, so a NAR
   * published meanwhile is either too young or referenced. Left to chance: an upload of the very bytes
   * of an old orphan published between the narinfo listing and the delete (a bucket keeps an existing
   * NAR as it is, so there the NAR stays old), which would leave its narinfo without a NAR.
   */
  async collectOrphanNars(graceMs = ORPHAN_NAR_GRACE_MS, now = Date.now()): Promise<string[]> {
    const old = (await this.storage.listNars()).filter(
      (n) => NAR_FILE_RE.test(n.file) && now - n.modifiedMs > graceMs,
    );
    if (old.length === 0) return [];
    const referenced = new Set<string>();
    for (const hash of await this.storage.listNarinfos()) {
      const held = await this.lookup(hash, false);
      // Unreadable (or gone meanwhile): what it references is unknown, so nothing is collected.
      if (!held) throw new Error(`cannot collect orphan NARs: the narinfo ${hash} cannot be read`);
      if (held.info.url.startsWith('nar/')) referenced.add(held.info.url.slice(4));
    }
    const orphans = old.map((n) => n.file).filter((f) => !referenced.has(f));
    for (const file of orphans) await this.storage.deleteNar(file);
    return orphans;
  }

  /** The compressed NAR for a `nar/<file>` URL component, or null when absent or the name is not ours. */
  async getNar(file: string): Promise<NarObject | null> {
    if (!NAR_FILE_RE.test(file)) return null;
    try {
      return await this.storage.getNar(file);
    } catch (err) {
      // The storage no longer serves the narinfos naming a corrupt NAR; neither does this memory.
      if (err instanceof CacheError && err.code === 'CACHE_STORAGE_CORRUPT')
        for (const [hash, p] of this.published) if (p.info.url === `nar/${file}`) this.published.delete(hash);
      throw err;
    }
  }

  /**
   * Stores a group's NARs and makes their signed narinfos ready (not visible yet, CacheStorage.storeGroup);
   * `publish` then publishes the kept ones in order (references before referrers) and answers, for each,
   * the narinfo now published: its own, or the one another writer sharing the storage published first.
   */
  async storeGroup(
    nars: readonly NarPut[],
    items: readonly { storePath: string; text: string; info: NarInfo }[],
  ): Promise<ReadyGroup['ready']> {
    const hashes = items.map(({ storePath }) => hashPart(storePath.slice(STORE_DIR.length + 1)));
    const ready = await this.storage.storeGroup(
      nars,
      items.map(({ text }, i) => ({ hash: hashes[i]!, text })),
    );
    return {
      publish: async (keep) => {
        const won = await ready.publish(keep);
        const out: NarInfo[] = [];
        let k = 0;
        for (const [i, { storePath, text, info }] of items.entries()) {
          if (!keep[i]) continue;
          const hash = hashes[i]!;
          if (won[k++]) {
            this.remember(hash, text, info);
            out.push(info);
            continue;
          }
          this.published.delete(hash);
          const theirs = await this.lookup(hash);
          if (!theirs) throw new Error(`the narinfo of ${storePath} exists but cannot be read back`);
          out.push(theirs.info);
        }
        return out;
      },
      drop: () => ready.drop(),
    };
  }

  /** The narinfos published so far durable (see CacheStorage.syncPublished). */
  syncPublished(): Promise<void> {
    return this.storage.syncPublished();
  }

  /** Whether the cache holds exactly this path (same hash part and name). */
  async has(storePath: string): Promise<boolean> {
    return (await this.info(storePath)) !== null;
  }

  /** The given paths (full store paths or basenames) that the cache does not hold, in input order. */
  async missing(paths: string[]): Promise<string[]> {
    for (const p of paths) if (!storeBasename(p)) throw invalidPath(p);
    // Looked up a slice at a time: a long list shares the event loop instead of flooding it.
    const out: string[] = [];
    for (let i = 0; i < paths.length; i += MISSING_SLICE) {
      const slice = paths.slice(i, i + MISSING_SLICE);
      const present = await Promise.all(slice.map((p) => this.has(p)));
      for (const [j, p] of slice.entries()) if (!present[j]) out.push(p);
    }
    return out;
  }

  /** The narinfo of exactly this path; null when absent or when its hash part belongs to another name. */
  async info(storePath: string): Promise<NarInfo | null> {
    const base = storeBasename(storePath);
    if (!base) throw invalidPath(storePath);
    const info = (await this.lookup(hashPart(base), false))?.info ?? null;
    return info && info.storePath === `${STORE_DIR}/${base}` ? info : null;
  }

  /** The full store path the cache holds under a hash part, or null. */
  async pathOfHash(hash: string): Promise<string | null> {
    return (await this.lookup(hash, false))?.info.storePath ?? null;
  }

  /**
   * How many paths the cache holds (one narinfo each), for the cluster status. Counted again at most
   * every COUNT_TTL_MS, or after this process published a path: in a bucket a count is a listing
   * request per 1,000 paths. Another coordinator's uploads show within that time.
   */
  async count(): Promise<number> {
    if (!this.counting || Date.now() - this.counting.at > COUNT_TTL_MS) {
      const counting = { at: Date.now(), n: this.storage.listNarinfos().then((l) => l.length) };
      // A failed count is not kept: the next status asks the storage again.
      counting.n.catch(() => {
        if (this.counting === counting) this.counting = null;
      });
      this.counting = counting;
    }
    return this.counting.n;
  }

  private counting: { at: number; n: Promise<number> } | null = null;

  /** Every store path in the cache (for listings and tests). */
  async list(): Promise<string[]> {
    const hashes = await this.storage.listNarinfos();
    const infos = await Promise.all(hashes.map((h) => this.lookup(h, false)));
    return infos.flatMap((i) => (i ? [i.info.storePath] : [])).sort();
  }

  /**
   * Stores one uploaded path: checks the claim against the streamed NAR, compresses, signs and
   * publishes. Already present with the same NarHash → `{ created: false }` without reading the body;
   * with another NarHash → 409 CACHE_PATH_CONFLICT (the first upload is never replaced, and a second,
   * different one is a mistake or an attempt to poison the cache).
   */
  async put(
    basename: string,
    claim: IngestClaim,
    body: NodeJS.ReadableStream,
    claimPaths?: ClaimPaths,
  ): Promise<IngestResult> {
    const { storePath, held } = await this.admit(basename, claim);
    return held ?? ingestNar(this, storePath, claim, body, claimPaths);
  }

  /**
   * The first check of an upload: the store path it names, and what the cache already holds under it
   * with the same NarHash (then nothing is to be stored). Refuses an invalid name, another NarHash for a
   * held path (409 CACHE_PATH_CONFLICT) and another name under a held hash part.
   */
  async admit(
    basename: string,
    claim: IngestClaim,
  ): Promise<{ storePath: string; held: IngestResult | null }> {
    const storePath = this.storePathOf(basename);
    // One lookup answers both questions: a path and its hash part name the same narinfo.
    const existing = (await this.lookup(hashPart(storePath.slice(STORE_DIR.length + 1)), false))?.info;
    if (!existing) return { storePath, held: null };
    if (existing.storePath === storePath) {
      const claimed = formatSha256(claim.narHash);
      if (existing.narHash === claimed) return { storePath, held: { created: false, info: existing } };
      throw pathConflict(storePath, existing.narHash, claimed);
    }
    // Nix's hash part covers the name, so another name under the same hash is a forgery or a mistake.
    throw new CacheError(
      'CACHE_INVALID_PATH',
      409,
      `the cache already holds ${existing.storePath} under the hash part of ${storePath}; check the name you are uploading`,
    );
  }

  /** The full store path an upload names by its basename or its full path; CACHE_INVALID_PATH for anything else. */
  storePathOf(basename: string): string {
    // storeBasename takes `<hash>-<name>` with no slash in it, alone or after `/nix/store/`.
    const base = storeBasename(basename);
    if (!base) throw invalidPath(basename);
    return `${STORE_DIR}/${base}`;
  }

  /** Checks and compresses one NAR of a batch into a spool file (see ingest.ts); `storeAndReady` stores it. */
  stage(
    storePath: string,
    claim: IngestClaim,
    body: NodeJS.ReadableStream | Buffer,
    staged: StagedPaths,
  ): Promise<StagedNar> {
    return stageNar(this, storePath, claim, body, staged);
  }

  /**
   * Publishing a group of staged NARs, in two steps: the NARs stored and their narinfos signed and made
   * ready, in one wait (not visible yet, see ingest.ts storeAndReady), …
   */
  storeAndReady(staged: readonly StagedNar[]): Promise<ReadyGroup> {
    return storeAndReady(this, staged);
  }

  /** … then claimed and published, in order. */
  publishReady(group: ReadyGroup, claimPaths?: ClaimPaths): Promise<IngestResult[]> {
    return publishReady(group, claimPaths);
  }

  /** Drops staged NARs of a batch that stopped. */
  discard(staged: readonly StagedNar[]): Promise<void> {
    return discardStaged(staged);
  }
}

function invalidPath(p: string): CacheError {
  return new CacheError(
    'CACHE_INVALID_PATH',
    400,
    `${JSON.stringify(p)} is not a store path: expected /nix/store/<32-char nix-base32 hash>-<name> or its basename`,
  );
}
