/**
 * Uploads: a NAR's hash and size are computed and its whole structure is checked while the body is
 * compressed into a local spool file (staging; a small NAR in one piece, a large one streamed); only when
 * all of it matches the claim is it stored and then its signed narinfo published. Staged NARs are stored
 * and published in groups (a batch upload), so a directory syncs a group's files together.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { brotliCompress, createBrotliCompress, constants as zc } from 'node:zlib';
import { fingerprint, hashPart, type NarInfo, renderNarInfo } from '../../lib/nar-info.js';
import { checkNar, NarFormatError, NarValidator } from '../../lib/nar-parse.js';
import { formatSha256, toNixBase32 } from '../../lib/nix-base32.js';
import { CacheError } from './errors.js';
import { type CacheKey, signFingerprint } from './key.js';
import type { NarPut } from './storage.js';

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
 * Decides, across every coordinator sharing the cache, which upload of each path wins: records these
 * unless another came first, and returns for each the NarHash of the first (PostgreSQL's cache_pushes,
 * one statement for a group).
 */
export type ClaimPaths = (claims: readonly { path: string; narHash: string }[]) => Promise<string[]>;

export interface IngestResult {
  created: boolean;
  info: NarInfo;
}

/** A NAR starts with the length-prefixed string "nix-archive-1". */
const NAR_MAGIC = Buffer.concat([Buffer.from([13, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('nix-archive-1')]);

/** Refuses a body whose first bytes are not (a prefix of) the NAR magic, before reading further. */
function checkMagic(head: Buffer): void {
  const n = Math.min(head.length, NAR_MAGIC.length);
  if (!head.subarray(0, n).equals(NAR_MAGIC.subarray(0, n))) {
    throw new CacheError(
      'CACHE_NOT_A_NAR',
      400,
      'the upload body is not a NAR; send the output of `nix-store --dump <path>` uncompressed',
    );
  }
}

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
      try {
        checkMagic(this.head);
      } catch (err) {
        return err as CacheError;
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

/**
 * How NARs are stored: `none` (the NAR as uploaded: no compression work, FileHash is the NarHash) or
 * `br` (brotli at the store's quality). Nix reads both.
 */
export type CacheCompression = 'none' | 'br';

/** What ingesting needs of the cache's storage (CacheStore provides it; declared here so the two modules do not import each other). */
export interface IngestTarget {
  readonly maxNarBytes: number;
  readonly compression: CacheCompression;
  readonly brotliQuality: number;
  readonly spoolDir: string;
  readonly key: CacheKey;
  /** Stores a group's NARs and makes their signed narinfos ready (CacheStorage.storeGroup). */
  storeGroup(
    nars: readonly NarPut[],
    items: readonly { storePath: string; text: string; info: NarInfo }[],
  ): Promise<ReadyGroup['ready']>;
  /** The published narinfos durable (CacheStorage.syncPublished): before an upload is answered. */
  syncPublished(): Promise<void>;
  has(storePath: string): Promise<boolean>;
  pathOfHash(hash: string): Promise<string | null>;
}

/** Paths staged earlier in the same batch, by hash part: they count as present for references. */
export type StagedPaths = ReadonlyMap<string, string>;

/** A NAR checked against its claim and compressed, not yet stored. */
export interface StagedNar {
  storePath: string;
  /** The stored form's spool file (a large NAR, streamed) … */
  spooled?: string;
  /** … or its bytes (a small NAR: written once, straight into the storage). */
  data?: Buffer;
  /** Its name under `nar/` once stored. */
  narFileName: string;
  /** The narinfo, signed when published. */
  unsigned: NarInfo;
}

/**
 * The claimed references as full store paths, each held by the cache, staged earlier in the batch, or
 * the path itself: the cache must never hold a path whose closure it cannot serve.
 */
async function resolveReferences(
  store: IngestTarget,
  storePath: string,
  claim: IngestClaim,
  staged: StagedPaths | undefined,
): Promise<string[]> {
  const resolved = new Set<string>();
  const absent: string[] = [];
  for (const ref of claim.references) {
    const full = ref.startsWith('/')
      ? ref
      : ref === hashPart(storePath.slice(11))
        ? storePath
        : (staged?.get(ref) ?? (await store.pathOfHash(ref)));
    const present =
      full !== null &&
      (full === storePath || staged?.get(hashPart(full.slice(11))) === full || (await store.has(full)));
    if (present) resolved.add(full);
    else absent.push(full ?? ref);
  }
  if (absent.length > 0) {
    throw new CacheError(
      'CACHE_MISSING_REFERENCES',
      409,
      `${storePath} references paths the cache does not hold: ${absent.join(', ')}; ` +
        'upload references first (`mxc push` orders the closure for you)',
    );
  }
  return [...resolved].sort();
}

/**
 * Checks references, then takes the body (a stream, or a small NAR already read whole) through every
 * check into a spool file; see the module header.
 */
export async function stageNar(
  store: IngestTarget,
  storePath: string,
  claim: IngestClaim,
  body: NodeJS.ReadableStream | Buffer,
  staged?: StagedPaths,
): Promise<StagedNar> {
  const references = await resolveReferences(store, storePath, claim, staged);
  if (claim.narSize > store.maxNarBytes) throw tooLarge(storePath, claim.narSize, store.maxNarBytes);

  const suffix = store.compression === 'br' ? '.nar.br' : '.nar';
  const whole = Buffer.isBuffer(body) || claim.narSize <= WHOLE_NAR_MAX;
  const spooled = whole
    ? undefined
    : join(store.spoolDir, `${hashPart(storePath.slice(11))}.${randomBytes(6).toString('hex')}${suffix}`);
  try {
    const got =
      spooled === undefined
        ? await compressWhole(store, storePath, claim, body)
        : await compressStreaming(store, storePath, claim, body as NodeJS.ReadableStream, spooled);
    if (got.narBytes !== claim.narSize) throw sizeMismatch(storePath, claim.narSize, String(got.narBytes));
    if (!got.narHash.equals(claim.narHash)) {
      throw new CacheError(
        'CACHE_HASH_MISMATCH',
        422,
        `the NAR received for ${storePath} has hash ${formatSha256(got.narHash)}, not the claimed ` +
          `${formatSha256(claim.narHash)}; the local path may be corrupt (try \`nix-store --verify-path ${storePath}\`)`,
      );
    }
    const narFileName = `${toNixBase32(got.fileHash)}${suffix}`;
    return {
      storePath,
      ...(spooled === undefined ? { data: got.data } : { spooled }),
      narFileName,
      unsigned: {
        storePath,
        url: `nar/${narFileName}`,
        compression: store.compression,
        fileHash: formatSha256(got.fileHash),
        fileSize: got.fileBytes,
        narHash: formatSha256(got.narHash),
        narSize: got.narBytes,
        references,
        deriver: claim.deriver,
        sigs: [],
      },
    };
  } catch (err) {
    if (spooled !== undefined) await unlink(spooled).catch(() => {});
    throw err;
  }
}

/** NARs up to this size are staged whole: one buffer, one compression call, one write (most paths are small). */
export const WHOLE_NAR_MAX = 1024 * 1024;

interface Compressed {
  /** The file's bytes, when it was made in memory. */
  data?: Buffer;
  narHash: Buffer;
  narBytes: number;
  fileHash: Buffer;
  fileBytes: number;
}

const brotliParams = (store: IngestTarget, narSize: number) => ({
  params: {
    [zc.BROTLI_PARAM_QUALITY]: store.brotliQuality,
    [zc.BROTLI_PARAM_SIZE_HINT]: Math.min(narSize, 2 ** 31 - 1),
    [zc.BROTLI_PARAM_LGWIN]: 22,
  },
});

const brotliCompressAsync = promisify(brotliCompress);

const notANar = (storePath: string, err: NarFormatError) =>
  new CacheError(
    'CACHE_NOT_A_NAR',
    400,
    `the upload of ${storePath} is ${err.message}; send exactly the output of \`nix-store --dump <path>\``,
    { cause: err },
  );

/** A small NAR: read whole (never past its claimed size), checked, hashed and compressed in one go, in memory. */
async function compressWhole(
  store: IngestTarget,
  storePath: string,
  claim: IngestClaim,
  body: NodeJS.ReadableStream | Buffer,
): Promise<Compressed> {
  const nar = Buffer.isBuffer(body) ? body : await readWhole(storePath, claim, body);
  const bytes = nar.length;
  checkMagic(nar.subarray(0, NAR_MAGIC.length));
  try {
    checkNar(nar);
  } catch (err) {
    if (err instanceof NarFormatError) throw notANar(storePath, err);
    throw err;
  }
  const narHash = createHash('sha256').update(nar).digest();
  if (store.compression === 'none')
    return { data: nar, narHash, narBytes: bytes, fileHash: narHash, fileBytes: bytes };
  // One output buffer for the whole result: one trip through the thread pool, not one per 16 KiB.
  const file = await brotliCompressAsync(nar, {
    ...brotliParams(store, claim.narSize),
    chunkSize: Math.max(64 * 1024, bytes + (bytes >> 6) + 1024),
  });
  return {
    data: file,
    narHash,
    narBytes: bytes,
    fileHash: createHash('sha256').update(file).digest(),
    fileBytes: file.length,
  };
}

/** A small NAR's stream read whole, never past its claimed size. */
async function readWhole(
  storePath: string,
  claim: IngestClaim,
  body: NodeJS.ReadableStream,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      if (bytes > claim.narSize) throw sizeMismatch(storePath, claim.narSize, `more than ${claim.narSize}`);
      chunks.push(chunk);
      if (bytes - chunk.length < NAR_MAGIC.length) checkMagic(Buffer.concat(chunks));
    }
  } catch (err) {
    if (err instanceof CacheError) throw err;
    throw aborted(storePath, bytes, claim.narSize, err);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes);
}

/** A large NAR: streamed through the meters, the grammar check and brotli into the spool file. */
async function compressStreaming(
  store: IngestTarget,
  storePath: string,
  claim: IngestClaim,
  body: NodeJS.ReadableStream,
  spooled: string,
): Promise<Compressed> {
  const nar = new NarMeter(Math.min(claim.narSize, store.maxNarBytes), (bytes) =>
    bytes > store.maxNarBytes
      ? tooLarge(storePath, bytes, store.maxNarBytes)
      : sizeMismatch(storePath, claim.narSize, `more than ${claim.narSize}`),
  );
  const file = new FileMeter();
  const out = createWriteStream(spooled, { mode: 0o644 });
  try {
    if (store.compression === 'none') await pipeline(body, nar, new NarValidator(), out);
    else
      await pipeline(
        body,
        nar,
        new NarValidator(),
        createBrotliCompress(brotliParams(store, claim.narSize)),
        file,
        out,
      );
  } catch (err) {
    if (err instanceof CacheError) throw err;
    if (err instanceof NarFormatError) throw notANar(storePath, err);
    throw aborted(storePath, nar.bytes, claim.narSize, err);
  }
  const narHash = nar.hash.digest();
  if (store.compression === 'none')
    return { narHash, narBytes: nar.bytes, fileHash: narHash, fileBytes: nar.bytes };
  return { narHash, narBytes: nar.bytes, fileHash: file.hash.digest(), fileBytes: file.bytes };
}

function aborted(storePath: string, bytes: number, narSize: number, cause: unknown): CacheError {
  return new CacheError(
    'CACHE_UPLOAD_ABORTED',
    400,
    `the upload of ${storePath} stopped after ${bytes} of ${narSize} bytes; run the push again`,
    { cause },
  );
}

/** Drops staged NARs that will not be published. */
export async function discardStaged(staged: readonly StagedNar[]): Promise<void> {
  await Promise.all(staged.map((s) => (s.spooled ? unlink(s.spooled).catch(() => {}) : undefined)));
}

/**
 * Stores staged NARs (together: a directory syncs them in one wait) and then publishes their signed
 * narinfos in order, references before referrers. Another coordinator sharing the storage may have
 * published a path meanwhile: theirs stays (same NarHash: a no-op; another: CACHE_PATH_CONFLICT).
 * Returns one result per NAR; the first refusal is thrown after the whole group was published.
 */
export async function publishStaged(
  store: IngestTarget,
  all: readonly StagedNar[],
  claimPaths?: ClaimPaths,
): Promise<IngestResult[]> {
  return publishReady(await storeAndReady(store, all), claimPaths);
}

/** A stored group's narinfos, signed and made ready by `storeAndReady`, not visible yet. */
export interface ReadyGroup {
  items: { storePath: string; text: string; info: NarInfo }[];
  ready: { publish(keep: readonly boolean[]): Promise<NarInfo[]>; drop(): Promise<void> };
}

/**
 * Stores staged NARs and makes their signed narinfos ready, in one wait (CacheStorage.storeGroup).
 * Nothing is visible yet: a stored NAR without its narinfo is never served (`collectOrphanNars` removes
 * a NAR file whose narinfo never came), so a batch stores a group while the groups before it still
 * publish. Whatever fails, the staged NARs are dropped and nothing is left ready.
 */
export async function storeAndReady(store: IngestTarget, all: readonly StagedNar[]): Promise<ReadyGroup> {
  const items = all.map(({ storePath, unsigned }) => {
    const info: NarInfo = { ...unsigned, sigs: [signFingerprint(store.key, fingerprint(unsigned))] };
    return { storePath, text: renderNarInfo(info), info };
  });
  if (all.length === 0) return { items, ready: { publish: async () => [], drop: async () => {} } };
  const nars: NarPut[] = all.map((s) =>
    s.data ? { file: s.narFileName, data: s.data } : { file: s.narFileName, spooled: s.spooled! },
  );
  try {
    return { items, ready: await store.storeGroup(nars, items) };
  } catch (err) {
    await discardStaged(all);
    throw err;
  }
}

/** Claims the paths of a ready group and publishes the narinfos of those claimed first by this upload, in order. */
export async function publishReady(
  { items, ready }: ReadyGroup,
  claimPaths?: ClaimPaths,
): Promise<IngestResult[]> {
  if (items.length === 0) return [];
  // A different upload of a path claimed first (through another coordinator, a moment ago): refused
  // before its narinfo is published, even where the storage could not refuse a second narinfo itself.
  // Claimed only once the NAR is stored, so an upload that fails on the way leaves no claim behind.
  let refusal: CacheError | null = null;
  let firsts: string[];
  try {
    firsts = claimPaths
      ? await claimPaths(items.map((s) => ({ path: s.storePath, narHash: s.info.narHash })))
      : items.map((s) => s.info.narHash);
  } catch (err) {
    await ready.drop();
    throw err;
  }
  const keep = items.map((s, i) => {
    if (firsts[i] === s.info.narHash) return true;
    refusal ??= claimConflict(s.storePath, firsts[i]!, s.info.narHash);
    return false;
  });
  const kept = items.filter((_, i) => keep[i]);
  const published = await ready.publish(keep);
  const results: IngestResult[] = [];
  for (const [i, { storePath, info }] of kept.entries()) {
    const held = published[i]!;
    if (held === info) results.push({ created: true, info });
    else if (held.narHash === info.narHash) results.push({ created: false, info: held });
    else refusal ??= pathConflict(storePath, held.narHash, info.narHash);
  }
  if (refusal) throw refusal;
  return results;
}

/** Stages and publishes one upload; see the module header. */
export async function ingestNar(
  store: IngestTarget,
  storePath: string,
  claim: IngestClaim,
  body: NodeJS.ReadableStream,
  claimPaths?: ClaimPaths,
): Promise<IngestResult> {
  const staged = await stageNar(store, storePath, claim, body);
  const [result] = await publishStaged(store, [staged], claimPaths);
  await store.syncPublished();
  return result!;
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

/**
 * An upload of a path another upload with another NarHash claimed first, whose narinfo this upload did
 * not find (being published, or never: it may have died part way): refused while that claim is fresh
 * (CLAIM_TTL_MS in store/cache-pushes.ts), saying so rather than that the cache holds the path.
 */
export function claimConflict(storePath: string, claimed: string, sent: string): CacheError {
  return new CacheError(
    'CACHE_PATH_CONFLICT',
    409,
    `another upload of ${storePath} with NarHash ${claimed} (not ${sent}) claimed the path first: it is ` +
      'being published (through this or another coordinator), or it stopped part way. The same build is ' +
      'accepted at once; another build of the path 10 minutes after that claim, if it was never published',
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
