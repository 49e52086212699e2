/**
 * Batch uploads: many NARs in one request body, each framed as `u32 big-endian header length, JSON
 * header (spec/cache.ts NarBatchHeader), exactly nar_size bytes of NAR`, ended by a zero length. Every
 * NAR gets the checks of a single upload (claim, references, hash, size, structure, conflicts); NARs are
 * staged while the next one streams in and published in order, in groups whose files (NARs and narinfos)
 * are synced together.
 */
import { Readable } from 'node:stream';
import { hashPart } from '../../lib/nar-info.js';
import { formatSha256 } from '../../lib/nix-base32.js';
import { MAX_BATCH_HEADER_BYTES, MAX_BATCH_NARS, NarBatchHeader } from '../../spec/cache.js';
import { claimOf } from './claim.js';
import { CacheError } from './errors.js';
import { type ClaimPaths, type IngestResult, pathConflict, type StagedNar, WHOLE_NAR_MAX } from './ingest.js';
import type { CacheStore } from './store.js';

/** NARs being staged at once: the next one streams in while the last ones are compressed and written. */
const STAGING_WINDOW = 4;
/**
 * Staged NARs published together (one pack in a directory, one sync wait, one claim statement), by count
 * and by uncompressed bytes. 64 rather than 32: the bench's 301-path push took ~25 ms less of the
 * cache's CPU (5 groups instead of 10; interleaved A/B, load ~8), and 128 no less than 64.
 */
export const GROUP_NARS = 64;
const GROUP_BYTES = 32 * 1024 * 1024;

function bad(message: string): CacheError {
  return new CacheError('CACHE_BAD_REQUEST', 400, message);
}

function aborted(message: string, cause?: unknown): CacheError {
  return new CacheError('CACHE_UPLOAD_ABORTED', 400, message, { cause });
}

/** Reads a request body as exact byte counts and sub-streams, never holding more than one chunk. */
export class BodyReader {
  private readonly chunks: AsyncIterator<Buffer>;
  private pending: Buffer | null = null;
  private ended = false;

  constructor(body: AsyncIterable<Buffer>) {
    this.chunks = body[Symbol.asyncIterator]();
  }

  private async next(): Promise<Buffer | null> {
    if (this.pending) {
      const p = this.pending;
      this.pending = null;
      return p;
    }
    if (this.ended) return null;
    const r = await this.chunks.next();
    if (r.done) {
      this.ended = true;
      return null;
    }
    return r.value;
  }

  /** Exactly `n` bytes (n small), or null when the body ended before the first of them. */
  async exact(n: number): Promise<Buffer | null> {
    const parts: Buffer[] = [];
    let have = 0;
    while (have < n) {
      const c = await this.next();
      if (!c) {
        if (have === 0) return null;
        throw aborted(`the batch ended part way through a frame header (${have} of ${n} bytes)`);
      }
      const use = Math.min(c.length, n - have);
      parts.push(c.subarray(0, use));
      if (use < c.length) this.pending = c.subarray(use);
      have += use;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** The next `n` bytes in one buffer (n small): no copy when one chunk holds them all. */
  async whole(n: number): Promise<Buffer> {
    const first = await this.next();
    if (first && first.length >= n) {
      if (first.length > n) this.pending = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let have = 0;
    for (let c = first; ; c = await this.next()) {
      if (!c) throw aborted(`the batch ended ${n - have} bytes before the end of a NAR`);
      const use = Math.min(c.length, n - have);
      c.copy(out, have, 0, use);
      have += use;
      if (use < c.length) this.pending = c.subarray(use);
      if (have === n) return out;
    }
  }

  /** The next `n` bytes as a stream; `consumed` resolves once the last of them was taken. */
  take(n: number): { stream: Readable; consumed: Promise<void> } {
    let done!: () => void;
    const consumed = new Promise<void>((resolve) => {
      done = resolve;
    });
    const self = this;
    async function* bytes(): AsyncGenerator<Buffer> {
      let left = n;
      while (left > 0) {
        const c = await self.next();
        if (!c) throw aborted(`the batch ended ${left} bytes before the end of a NAR`);
        if (c.length > left) {
          self.pending = c.subarray(left);
          left = 0;
          yield c.subarray(0, c.length - self.pending.length);
        } else {
          left -= c.length;
          yield c;
        }
      }
      done();
    }
    return { stream: Readable.from(bytes(), { objectMode: false }), consumed };
  }

  /** Reads and drops `n` bytes (a NAR the cache already holds). */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      const c = await this.next();
      if (!c) throw aborted(`the batch ended ${left} bytes before the end of a NAR`);
      if (c.length > left) this.pending = c.subarray(left);
      left -= Math.min(left, c.length);
    }
  }

  /** Whether anything follows (after the end mark there must be nothing). */
  async atEnd(): Promise<boolean> {
    const c = await this.next();
    if (c) this.pending = c;
    return c === null;
  }
}

async function readHeader(reader: BodyReader): Promise<NarBatchHeader | null> {
  const len = await reader.exact(4);
  if (!len) throw aborted('the batch ended without its end mark (a zero header length)');
  const n = len.readUInt32BE(0);
  if (n === 0) {
    if (!(await reader.atEnd())) throw bad('the batch continues after its end mark');
    return null;
  }
  if (n > MAX_BATCH_HEADER_BYTES)
    throw bad(`a NAR header of ${n} bytes is over the limit of ${MAX_BATCH_HEADER_BYTES}`);
  const text = (await reader.exact(n))?.toString('utf8');
  if (text === undefined) throw aborted('the batch ended before a NAR header');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw bad('a NAR header is not JSON');
  }
  const parsed = NarBatchHeader.safeParse(json);
  if (!parsed.success) {
    throw bad(
      `a NAR header is not {path, nar_hash, nar_size, references, deriver?}: ${parsed.error.issues
        .map((i) => `${i.path.join('.') || '(header)'}: ${i.message}`)
        .join('; ')}`,
    );
  }
  return parsed.data;
}

interface Entry {
  /** Set when the path came earlier in this batch with this NarHash: the index of that entry. */
  repeats?: number;
  /** What the cache already holds of the path (checked while the NAR streams in). */
  admission?: Promise<IngestResult | null>;
  staging?: Promise<StagedNar>;
}

/**
 * Ingests a batch body; returns one result per NAR in upload order. On a refusal, the NARs before the
 * refused one that passed every check are published (a re-run resumes after them) and the refusal is
 * thrown; nothing after it is.
 */
export async function ingestBatch(
  store: CacheStore,
  body: AsyncIterable<Buffer>,
  onPublished?: (result: IngestResult) => Promise<void>,
  claimPaths?: ClaimPaths,
): Promise<IngestResult[]> {
  const reader = new BodyReader(body);
  /** Paths staged by this batch, by hash part; and where each first came, with its NarHash. */
  const inBatch = new Map<string, string>();
  const firstOf = new Map<string, { index: number; narHash: string }>();
  const entries: Entry[] = [];
  const results: IngestResult[] = [];
  /** Entries before this index are published or being published, group after group, in order. */
  let scheduled = 0;
  let groupBytes = 0;
  let publishing: Promise<void> = Promise.resolve();
  let publishFailure: unknown = null;

  /**
   * Settles entries [from, to), stores the NARs of the ones before the first refused one and readies
   * their narinfos, without waiting for the groups before: neither is visible until the narinfo is
   * published, so the syncs of one group overlap the publishing of the last. The rest is dropped.
   */
  const prepare = async (from: number, to: number) => {
    const slice = await Promise.all(entries.slice(from, to).map(settle));
    const bad = slice.findIndex((e) => e.refusal !== undefined);
    const good = bad === -1 ? slice.length : bad;
    const fresh = slice.slice(0, good).flatMap((e) => (e.staged && !e.held ? [e.staged] : []));
    await store.discard(slice.flatMap((e, i) => (e.staged && (i >= good || e.held) ? [e.staged] : [])));
    // A group before failed: nothing more is published, so nothing more is stored.
    if (publishFailure !== null) {
      await store.discard(fresh);
      return { slice, bad, good, group: null };
    }
    return { slice, bad, good, group: await store.storeAndReady(fresh) };
  };
  /**
   * Publishes the narinfos of entries [from, to) (after the groups before them): the ones before the
   * first refused one, whose refusal is then thrown; the cache already holding a path makes its entry a no-op.
   */
  const publishRange = async (from: number, prepared: ReturnType<typeof prepare>): Promise<void> => {
    const { slice, bad, good, group } = await prepared;
    const out = group ? await store.publishReady(group, claimPaths) : [];
    let k = 0;
    for (const [i, e] of slice.slice(0, good).entries()) {
      results[from + i] =
        e.held ??
        (e.staged ? out[k++]! : { created: false, info: results[entries[from + i]!.repeats!]!.info });
    }
    if (onPublished) await Promise.all(out.filter((r) => r.created).map(onPublished));
    if (bad !== -1) throw slice[bad]!.refusal;
  };
  const schedule = (to: number): void => {
    const from = scheduled;
    scheduled = to;
    groupBytes = 0;
    const prepared = prepare(from, to);
    prepared.catch(() => {}); // awaited in turn below; a failure must not go unhandled meanwhile
    publishing = publishing.then(() =>
      publishFailure === null
        ? publishRange(from, prepared).catch((err: unknown) => {
            publishFailure = err;
          })
        : prepared.then(
            ({ group }) => group?.ready.drop(),
            () => {},
          ),
    );
  };

  try {
    for (;;) {
      if (publishFailure !== null) throw publishFailure;
      const header = await readHeader(reader);
      if (!header) break;
      if (entries.length >= MAX_BATCH_NARS)
        throw bad(`at most ${MAX_BATCH_NARS} NARs per batch; send the rest in another one`);
      const claim = claimOf(
        {
          narHash: header.nar_hash,
          narSize: header.nar_size,
          references: header.references,
          deriver: header.deriver,
        },
        store.maxNarBytes,
      );
      const storePath = store.storePathOf(header.path);
      const hash = hashPart(storePath.slice(11));
      const narHash = formatSha256(claim.narHash);
      const earlier = firstOf.get(storePath);
      if (earlier !== undefined) {
        if (earlier.narHash !== narHash) throw pathConflict(storePath, earlier.narHash, narHash);
        await reader.skip(claim.narSize);
        entries.push({ repeats: earlier.index });
        continue;
      }
      if (inBatch.has(hash)) {
        throw new CacheError(
          'CACHE_INVALID_PATH',
          409,
          `this batch already holds ${inBatch.get(hash)} under the hash part of ${storePath}; check the names you are uploading`,
        );
      }
      // What the cache holds is looked up while the NAR streams in (the client asked which paths are
      // missing just before, so it is rarely anything); a conflict is refused before publishing.
      const admission = store.admit(header.path, claim).then((a) => a.held);
      // A small NAR is read whole and staged as one buffer; a large one streams into its staging.
      const { stream, consumed } =
        claim.narSize <= WHOLE_NAR_MAX
          ? { stream: await reader.whole(claim.narSize), consumed: Promise.resolve() }
          : reader.take(claim.narSize);
      // References are checked against the paths staged before this one (the map grows only after).
      const staging = store.stage(storePath, claim, stream, inBatch);
      staging.catch(() => {}); // awaited when published; a refusal must not go unhandled meanwhile
      admission.catch(() => {});
      inBatch.set(hash, storePath);
      firstOf.set(storePath, { index: entries.length, narHash });
      entries.push({ admission, staging });
      groupBytes += claim.narSize;
      // The next header follows this NAR's last byte; a refusal part way stops the batch here.
      await Promise.race([consumed, staging, admission.then(() => consumed)]);
      const inFlight = entries.slice(Math.max(0, entries.length - STAGING_WINDOW - 1));
      if (inFlight.length > STAGING_WINDOW) await inFlight[0]!.staging;
      if (entries.length - scheduled >= GROUP_NARS || groupBytes >= GROUP_BYTES) schedule(entries.length);
    }
    schedule(entries.length);
    await publishing;
    if (publishFailure !== null) throw publishFailure;
    // Once for the whole batch, not once a group: the answer says these paths are stored.
    if (results.some((r) => r.created)) await store.syncPublished();
    return results;
  } catch (err) {
    // Publish what passed every check before the refusal (a re-run resumes after it); drop the rest.
    const rest = await Promise.all(entries.slice(scheduled).map(settle));
    const bad = rest.findIndex((e) => e.refusal !== undefined);
    schedule(scheduled + (bad === -1 ? rest.length : bad));
    await publishing;
    await store.syncPublished().catch(() => {}); // what was published stays so; the refusal is the answer
    await discardFrom(store, entries.slice(scheduled));
    throw publishFailure ?? (bad === -1 ? err : rest[bad]!.refusal);
  }
}

/** An entry once its staging and admission are over: what was staged, what the cache held, or why it was refused. */
async function settle(e: Entry): Promise<{ staged?: StagedNar; held?: IngestResult; refusal?: unknown }> {
  const [staging, admission] = await Promise.allSettled([e.staging, e.admission]);
  const staged = staging.status === 'fulfilled' ? staging.value : undefined;
  if (staging.status === 'rejected') return { refusal: staging.reason };
  if (admission.status === 'rejected') return { staged, refusal: admission.reason };
  return { staged, held: admission.value ?? undefined };
}

async function discardFrom(store: CacheStore, entries: readonly Entry[]): Promise<void> {
  const staged = await Promise.all(entries.map((e) => e.staging?.catch(() => null) ?? null));
  await store.discard(staged.filter((s): s is StagedNar => s !== null));
}
