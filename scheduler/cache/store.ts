/**
 * The cache on disk: `<dir>/narinfo/<hash>.narinfo`, `<dir>/nar/<filehash>.nar.br`, `<dir>/tmp/`.
 * A path is in the cache exactly when its narinfo exists; narinfos are published last, by rename.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import {
  hashPart,
  type NarInfo,
  parseNarInfo,
  STORE_DIR,
  STORE_HASH_RE,
  storeBasename,
} from '../../lib/nar-info.js';
import { formatSha256 } from '../../lib/nix-base32.js';
import { CacheError } from './errors.js';
import { type IngestClaim, type IngestResult, ingestNar } from './ingest.js';
import type { CacheKey } from './key.js';

/** Compressed NAR file names we serve: `<nix base32>.nar` plus a known compression suffix. */
const NAR_FILE_RE = /^[0-9a-z]{52}\.nar(\.(br|xz|bz2|zst))?$/;

export interface CacheStoreOptions {
  /** Largest uncompressed NAR accepted, in bytes. */
  maxNarBytes?: number;
  /** Brotli quality 0–11; higher is smaller and much slower. */
  brotliQuality?: number;
  /** How long a narinfo held in memory is served without a stat of its file; default 1000 ms. */
  narinfoRevalidateMs?: number;
}

export const DEFAULT_MAX_NAR_BYTES = 8 * 1024 ** 3;

/** Paths looked up at once by `missing`. */
const MISSING_SLICE = 256;

/** Narinfos kept in memory (a few hundred bytes each). */
const NARINFO_CACHE_ENTRIES = 200_000;

interface Published {
  text: string;
  info: NarInfo;
  mtimeMs: number;
  size: number;
  checkedAt: number;
}

export class CacheStore {
  readonly narDir: string;
  readonly narinfoDir: string;
  readonly tmpDir: string;
  readonly tmpRoot: string;
  readonly maxNarBytes: number;
  readonly brotliQuality: number;
  readonly narinfoRevalidateMs: number;

  constructor(
    readonly dir: string,
    readonly key: CacheKey,
    opts: CacheStoreOptions = {},
  ) {
    this.narDir = join(dir, 'nar');
    this.narinfoDir = join(dir, 'narinfo');
    // One temp folder per process: several coordinators may share the cache directory (MXC_CACHE_DIR).
    this.tmpRoot = join(dir, 'tmp');
    this.tmpDir = join(this.tmpRoot, `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`);
    this.maxNarBytes = opts.maxNarBytes ?? DEFAULT_MAX_NAR_BYTES;
    // Measured (issue 17): quality 2 compresses binaries about as well as 4 (busybox 54 % vs 56 %,
    // node 35 % vs 33 %) at ~100 MiB/s instead of ~28 MiB/s, which made compression the push's bottleneck.
    this.brotliQuality = opts.brotliQuality ?? 2;
    this.narinfoRevalidateMs = opts.narinfoRevalidateMs ?? 1000;
  }

  /**
   * Creates the folders and drops temp files crashed uploads left behind: only entries untouched for a
   * day, never the live temp files of another coordinator sharing the directory.
   */
  async init(): Promise<void> {
    await mkdir(this.narDir, { recursive: true });
    await mkdir(this.narinfoDir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
    const dayAgo = Date.now() - 86_400_000;
    for (const name of await readdir(this.tmpRoot).catch(() => [] as string[])) {
      const p = join(this.tmpRoot, name);
      if (p === this.tmpDir) continue;
      const st = await stat(p).catch(() => null);
      if (st && st.mtimeMs < dayAgo) await rm(p, { recursive: true, force: true }).catch(() => {});
    }
  }

  /** The narinfo file for a store path or basename; throws CACHE_INVALID_PATH for anything else. */
  narinfoFile(storePath: string): string {
    const base = storeBasename(storePath);
    if (!base) throw invalidPath(storePath);
    return join(this.narinfoDir, `${hashPart(base)}.narinfo`);
  }

  /** The narinfo file for a bare hash part (what nix asks for), or null when it is not one. */
  narinfoFileForHash(hash: string): string | null {
    return STORE_HASH_RE.test(hash) ? join(this.narinfoDir, `${hash}.narinfo`) : null;
  }

  /**
   * The narinfo text for a hash part, or null. Narinfo lookups are the hot path of every substitution
   * and of every push (references, `missing`), so narinfos are kept in memory and revalidated at most
   * every `narinfoRevalidateMs` with a stat (re-read only when the file changed, forgotten when gone).
   * Misses are not remembered: the path may be uploaded a moment later, here or by another
   * coordinator sharing the directory.
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
    const file = this.narinfoFileForHash(hash);
    if (!file) return null;
    const hit = this.published.get(hash);
    if (hit && (!revalidate || Date.now() - hit.checkedAt < this.narinfoRevalidateMs)) return hit;
    const st = await stat(file).catch(() => null);
    if (!st) {
      this.published.delete(hash);
      return null;
    }
    if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) {
      hit.checkedAt = Date.now();
      return hit;
    }
    const text = await readFile(file, 'utf8').catch(() => null);
    const info = text === null ? null : parseNarInfo(text);
    if (text === null || !info) return null;
    return this.remember(hash, text, info, st.mtimeMs);
  }

  /** Records a narinfo read from disk or just published (mtime unknown: the next check re-reads it). */
  remember(hash: string, text: string, info: NarInfo, mtimeMs = -1): Published {
    if (this.published.size >= NARINFO_CACHE_ENTRIES) this.published.clear();
    const entry = { text, info, mtimeMs, size: Buffer.byteLength(text), checkedAt: Date.now() };
    this.published.set(hash, entry);
    return entry;
  }

  private readonly published = new Map<string, Published>();

  /** The compressed NAR file for a `nar/<file>` URL component, or null when the name is not ours. */
  narFile(file: string): string | null {
    return NAR_FILE_RE.test(file) ? join(this.narDir, file) : null;
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

  /** Every store path in the cache (for listings and tests). */
  /** How many paths the cache holds (one narinfo each). */
  async count(): Promise<number> {
    return (await readdir(this.narinfoDir)).filter((f) => f.endsWith('.narinfo')).length;
  }

  async list(): Promise<string[]> {
    const files = (await readdir(this.narinfoDir)).filter((f) => f.endsWith('.narinfo'));
    const infos = await Promise.all(files.map((f) => readNarInfo(join(this.narinfoDir, f))));
    return infos.flatMap((i) => (i ? [i.storePath] : [])).sort();
  }

  /**
   * Stores one uploaded path: checks the claim against the streamed NAR, compresses, signs and
   * publishes. Already present with the same NarHash → `{ created: false }` without reading the body;
   * with another NarHash → 409 CACHE_PATH_CONFLICT (the first upload is never replaced, and a second,
   * different one is a mistake or an attempt to poison the cache).
   */
  async put(basename: string, claim: IngestClaim, body: NodeJS.ReadableStream): Promise<IngestResult> {
    const base = storeBasename(basename);
    if (!base || basename.includes('/')) throw invalidPath(basename);
    const storePath = `${STORE_DIR}/${base}`;
    const existing = await this.info(storePath);
    if (existing) {
      const claimed = formatSha256(claim.narHash);
      if (existing.narHash === claimed) return { created: false, info: existing };
      throw new CacheError(
        'CACHE_PATH_CONFLICT',
        409,
        `the cache already holds ${storePath} with NarHash ${existing.narHash}, not ${claimed}; a path is ` +
          'never replaced: check that you are pushing the right build (the operator sees this attempt in the coordinator log)',
      );
    }
    // Nix's hash part covers the name, so another name under the same hash is a forgery or a mistake.
    const holder = await this.pathOfHash(hashPart(base));
    if (holder) {
      throw new CacheError(
        'CACHE_INVALID_PATH',
        409,
        `the cache already holds ${holder} under the hash part of ${storePath}; check the name you are uploading`,
      );
    }
    return ingestNar(this, storePath, claim, body);
  }
}

async function readNarInfo(file: string): Promise<NarInfo | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return null;
  }
  return parseNarInfo(text);
}

function invalidPath(p: string): CacheError {
  return new CacheError(
    'CACHE_INVALID_PATH',
    400,
    `${JSON.stringify(p)} is not a store path: expected /nix/store/<32-char nix-base32 hash>-<name> or its basename`,
  );
}
