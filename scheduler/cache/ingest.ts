/**
 * One upload, streamed: NAR hash and size are computed and the whole NAR's structure is checked while
 * the body is compressed into a local spool file; only when all of it matches the claim is the NAR
 * stored and then its signed narinfo published.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createBrotliCompress, constants as zc } from 'node:zlib';
import { fingerprint, hashPart, type NarInfo, renderNarInfo } from '../../lib/nar-info.js';
import { NarFormatError, NarValidator } from '../../lib/nar-parse.js';
import { formatSha256, toNixBase32 } from '../../lib/nix-base32.js';
import { CacheError } from './errors.js';
import { type CacheKey, signFingerprint } from './key.js';
import type { CacheStorage } from './storage.js';

/** What the uploader says about the path; every field is checked or signed as given. */
export interface IngestClaim {
  /** sha256 of the uncompressed NAR (32 bytes). */
  narHash: Buffer;
  narSize: number;
  /** Full store paths, or bare hash parts of paths already in the cache (or of the path itself). */
  references: string[];
  deriver?: string;
}

/**
 * Decides, across every coordinator sharing the cache, which upload of a path wins: records this one
 * unless another came first, and returns the NarHash of the first (PostgreSQL's cache_pushes).
 */
export type ClaimPath = (path: string, narHash: string) => Promise<string>;

export interface IngestResult {
  created: boolean;
  info: NarInfo;
}

/** A NAR starts with the length-prefixed string "nix-archive-1". */
const NAR_MAGIC = Buffer.concat([Buffer.from([13, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('nix-archive-1')]);

/** Hashes and counts the uncompressed stream, failing fast once it is longer than claimed. */
class NarMeter extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  private head = Buffer.alloc(0);

  constructor(
    private readonly limit: number,
    private readonly onTooLong: (bytes: number) => CacheError,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    const err = this.check(chunk);
    if (err) {
      cb(err);
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  private check(chunk: Buffer): CacheError | null {
    if (this.bytes > this.limit) return this.onTooLong(this.bytes);
    if (this.head.length < NAR_MAGIC.length) {
      this.head = Buffer.concat([this.head, chunk]).subarray(0, NAR_MAGIC.length);
      if (!this.head.equals(NAR_MAGIC.subarray(0, this.head.length))) {
        return new CacheError(
          'CACHE_NOT_A_NAR',
          400,
          'the upload body is not a NAR; send the output of `nix-store --dump <path>` uncompressed',
        );
      }
    }
    return null;
  }
}

/** Hashes and counts the compressed stream (the narinfo's FileHash/FileSize). */
class FileMeter extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    cb(null, chunk);
  }
}

/** What ingesting needs of the cache's storage (CacheStore provides it; declared here so the two modules do not import each other). */
export interface IngestTarget {
  readonly maxNarBytes: number;
  readonly brotliQuality: number;
  readonly spoolDir: string;
  readonly key: CacheKey;
  readonly storage: Pick<CacheStorage, 'putNar'>;
  publishNarinfo(storePath: string, text: string, info: NarInfo): Promise<NarInfo>;
  has(storePath: string): Promise<boolean>;
  pathOfHash(hash: string): Promise<string | null>;
}

/** Checks references, streams the body into the cache and publishes it; see the module header. */
export async function ingestNar(
  store: IngestTarget,
  storePath: string,
  claim: IngestClaim,
  body: NodeJS.ReadableStream,
  claimPath?: ClaimPath,
): Promise<IngestResult> {
  // The cache must never hold a path whose closure it cannot serve, so references come first.
  const resolved = new Set<string>();
  const absent: string[] = [];
  for (const ref of claim.references) {
    const full = ref.startsWith('/')
      ? ref
      : ref === hashPart(storePath.slice(11))
        ? storePath
        : await store.pathOfHash(ref);
    if (full === storePath || (full && (await store.has(full)))) resolved.add(full);
    else absent.push(full ?? ref);
  }
  const references = [...resolved].sort();
  if (absent.length > 0) {
    throw new CacheError(
      'CACHE_MISSING_REFERENCES',
      409,
      `${storePath} references paths the cache does not hold: ${absent.join(', ')}; ` +
        'upload references first (`mxc push` orders the closure for you)',
    );
  }
  if (claim.narSize > store.maxNarBytes) throw tooLarge(storePath, claim.narSize, store.maxNarBytes);

  const tmp = join(
    store.spoolDir,
    `${hashPart(storePath.slice(11))}.${randomBytes(6).toString('hex')}.nar.br`,
  );
  const nar = new NarMeter(Math.min(claim.narSize, store.maxNarBytes), (bytes) =>
    bytes > store.maxNarBytes
      ? tooLarge(storePath, bytes, store.maxNarBytes)
      : sizeMismatch(storePath, claim.narSize, `more than ${claim.narSize}`),
  );
  const file = new FileMeter();
  const brotli = createBrotliCompress({
    params: {
      [zc.BROTLI_PARAM_QUALITY]: store.brotliQuality,
      [zc.BROTLI_PARAM_SIZE_HINT]: Math.min(claim.narSize, 2 ** 31 - 1),
      [zc.BROTLI_PARAM_LGWIN]: 22,
    },
  });
  let stored = false;
  try {
    try {
      await pipeline(body, nar, new NarValidator(), brotli, file, createWriteStream(tmp, { mode: 0o644 }));
    } catch (err) {
      if (err instanceof CacheError) throw err;
      if (err instanceof NarFormatError) {
        throw new CacheError(
          'CACHE_NOT_A_NAR',
          400,
          `the upload of ${storePath} is ${err.message}; send exactly the output of \`nix-store --dump <path>\``,
          { cause: err },
        );
      }
      throw new CacheError(
        'CACHE_UPLOAD_ABORTED',
        400,
        `the upload of ${storePath} stopped after ${nar.bytes} of ${claim.narSize} bytes; run the push again`,
        { cause: err },
      );
    }
    if (nar.bytes !== claim.narSize) throw sizeMismatch(storePath, claim.narSize, String(nar.bytes));
    const narHash = nar.hash.digest();
    if (!narHash.equals(claim.narHash)) {
      throw new CacheError(
        'CACHE_HASH_MISMATCH',
        422,
        `the NAR received for ${storePath} has hash ${formatSha256(narHash)}, not the claimed ` +
          `${formatSha256(claim.narHash)}; the local path may be corrupt (try \`nix-store --verify-path ${storePath}\`)`,
      );
    }
    const fileHash = file.hash.digest();
    const narFileName = `${toNixBase32(fileHash)}.nar.br`;
    await store.storage.putNar(narFileName, tmp);
    stored = true;
    // A different upload of this path claimed first (through another coordinator, a moment ago): refused
    // before its narinfo is published, even where the storage could not refuse a second narinfo itself.
    // Claimed only once the NAR is stored, so an upload that fails on the way leaves no claim behind.
    const held = await claimPath?.(storePath, formatSha256(narHash));
    if (held !== undefined && held !== formatSha256(narHash))
      throw pathConflict(storePath, held, formatSha256(narHash));

    const unsigned: NarInfo = {
      storePath,
      url: `nar/${narFileName}`,
      compression: 'br',
      fileHash: formatSha256(fileHash),
      fileSize: file.bytes,
      narHash: formatSha256(narHash),
      narSize: nar.bytes,
      references,
      deriver: claim.deriver,
      sigs: [],
    };
    const info: NarInfo = { ...unsigned, sigs: [signFingerprint(store.key, fingerprint(unsigned))] };
    // Another coordinator sharing the storage may have published this path meanwhile: theirs stays.
    const published = await store.publishNarinfo(storePath, renderNarInfo(info), info);
    if (published === info) return { created: true, info };
    if (published.narHash === info.narHash) return { created: false, info: published };
    throw pathConflict(storePath, published.narHash, info.narHash);
  } finally {
    // Only a failed upload leaves its spool file behind (a stored one was moved away).
    if (!stored) await unlink(tmp).catch(() => {});
  }
}

function tooLarge(storePath: string, bytes: number, max: number): CacheError {
  return new CacheError(
    'CACHE_TOO_LARGE',
    413,
    `${storePath} is ${bytes} bytes uncompressed, over the cache limit of ${max} bytes; raise maxNarBytes on the coordinator`,
  );
}

function sizeMismatch(storePath: string, claimed: number, got: string): CacheError {
  return new CacheError(
    'CACHE_SIZE_MISMATCH',
    422,
    `the NAR received for ${storePath} is ${got} bytes, not the claimed NarSize ${claimed}; ` +
      'send exactly the output of `nix-store --dump <path>`',
  );
}

/** A second upload of a cached path with another NarHash: refused, the first upload is never replaced. */
export function pathConflict(storePath: string, held: string, claimed: string): CacheError {
  return new CacheError(
    'CACHE_PATH_CONFLICT',
    409,
    `the cache already holds ${storePath} with NarHash ${held}, not ${claimed}; a path is ` +
      'never replaced: check that you are pushing the right build (the operator sees this attempt in the coordinator log)',
  );
}
