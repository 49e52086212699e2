/**
 * `mxc push`'s engine: uploads the closure of some store paths to the coordinator's binary cache, only
 * the paths it lacks, references before referrers, as batch uploads (many NARs in one request body,
 * spec/cache.ts), each NAR streamed as it is read; small NARs are read a few paths ahead.
 */

import { realpath } from 'node:fs/promises';
import http from 'node:http';
import { type CommandError, runStreaming, type StartedCommand } from '../lib/exec.js';
import { answerOf, type HttpAnswer } from '../lib/http-answer.js';
import { narInto, narStream } from '../lib/nar-dump.js';
import { STORE_DIR } from '../lib/nar-info.js';
import { type PathInfo, queryClosureInfos } from '../lib/path-info.js';
import { MAX_BATCH_NARS, NAR_BATCH_MEDIA_TYPE, NarBatchAnswer, type NarBatchHeader } from '../spec/cache.js';

export interface PushProgress {
  pathsDone: number;
  pathsTotal: number;
  bytesDone: number;
  bytesTotal: number;
  /** A path being uploaded right now. */
  current?: string;
}

export interface PushOptions {
  /** Base URL of the coordinator, e.g. `http://10.0.0.1:4646`. */
  coordinator: string;
  token?: string;
  /** Roots; their closure is computed with `nix-store -qR`. */
  paths: string[];
  onProgress?: (p: PushProgress) => void;
  signal?: AbortSignal;
  /** How NARs are produced; default `node` (no process per path), `nix-store` pipes `nix-store --dump`. */
  narSource?: NarSource;
  /** The closure's `nix path-info`, when bin/push-early.js started it before the CLI loaded. */
  pathInfo?: StartedCommand;
}

export interface PushResult {
  /** Store paths this run sent and the cache now holds, references first. */
  uploaded: string[];
  /** Closure paths the cache already held. */
  skipped: number;
  /** Uncompressed NAR bytes sent. */
  bytes: number;
}

/** A refusal by the coordinator (its error code) or a local failure (`PUSH_…`). */
export class PushError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown; status?: number },
  ) {
    super(message, options);
    this.name = 'PushError';
    this.status = options?.status;
  }

  /** The HTTP status of the coordinator's refusal, when it refused. */
  readonly status?: number;
}

/** The closure in the local store with each path's info; a root that is not there is the user's mistake, said plainly. */
async function localClosure(
  paths: string[],
  signal?: AbortSignal,
  started?: StartedCommand,
): Promise<PathInfo[]> {
  try {
    return await queryClosureInfos(paths, { signal, started });
  } catch (err) {
    // nix's own words for a root outside the store are about flakes ("does not contain a 'flake.nix'").
    if ((err as CommandError).exitCode !== undefined) {
      const refused = await notInStore(paths);
      if (refused) throw Object.assign(refused, { cause: err });
    }
    const stderr = (err as CommandError).stderr ?? '';
    const gone = [...stderr.matchAll(/path '([^']+)' is not valid/g)].map((m) => m[1]!);
    if (gone.length === 0) throw err;
    throw Object.assign(notBuiltHere(gone), { cause: err });
  }
}

/** Store paths this machine's store does not hold. */
function notBuiltHere(gone: readonly string[]): PushError {
  return new PushError(
    'PUSH_PATH_MISSING',
    `${gone.join(', ')} ${gone.length === 1 ? 'is' : 'are'} not in this machine's Nix store: build ${gone.length === 1 ? 'it' : 'them'} here first (nix-build …); ` +
      '`mxc submit --no-push` skips the upload when the coordinator’s cache already has the closure',
  );
}

/** The first root that does not exist or is not in the Nix store, as a PushError; null when none. */
async function notInStore(paths: readonly string[]): Promise<PushError | null> {
  for (const path of paths) {
    let real: string;
    try {
      real = await realpath(path);
    } catch {
      if (path.startsWith(`${STORE_DIR}/`)) return notBuiltHere([path]);
      return new PushError(
        'PUSH_PATH_MISSING',
        `${path} does not exist: build it here first (nix-build …) and push what it printed, or its ./result link`,
      );
    }
    if (!real.startsWith(`${STORE_DIR}/`)) {
      return new PushError(
        'PUSH_NOT_A_STORE_PATH',
        `${path} is not in the Nix store (${real === path ? STORE_DIR : `it is ${real}, not in ${STORE_DIR}`}): push what nix-build printed, or its ./result link`,
      );
    }
  }
  return null;
}

/** Uncompressed bytes per batch request (a NAR larger than this goes alone). */
const BATCH_BYTES = 256 * 1024 * 1024;

/** Pushes the closure of `opts.paths`; safe to re-run after a failure (it resumes per path). */
export async function pushClosure(opts: PushOptions): Promise<PushResult> {
  const base = new URL(opts.coordinator.endsWith('/') ? opts.coordinator : `${opts.coordinator}/`);
  const closure = await localClosure(opts.paths, opts.signal, opts.pathInfo);
  let sent!: () => void;
  const flushed = new Promise<void>((resolve) => {
    sent = resolve;
  });
  const asked = askMissing(
    base,
    opts.token,
    closure.map((i) => i.path),
    opts.signal,
    sent,
  );
  asked.catch(() => {}); // awaited below; a failure must not go unhandled meanwhile
  // Once the question is on its way, and while the cache looks the paths up: the order and the first
  // frame headers (~10 ms of a cold push's JavaScript, which came after the answer, off its critical
  // path). A path the cache holds keeps its place among the rest: the order stays references first.
  await Promise.race([flushed, asked]);
  const ordered = referencesFirst(closure);
  const headers = new Map(ordered.slice(0, MAX_BATCH_NARS).map((i) => [i.path, frameHeader(i)]));
  const missing = new Set(await asked);
  const infos = ordered.filter((i) => missing.has(i.path));
  const progress: PushProgress = {
    pathsDone: 0,
    pathsTotal: infos.length,
    bytesDone: 0,
    bytesTotal: infos.reduce((n, i) => n + i.narSize, 0),
  };
  opts.onProgress?.({ ...progress });
  const uploaded: string[] = [];
  const pool = new FramePool();
  // One batch after another: a later batch may reference paths of an earlier one.
  for (const batch of batchesOf(infos, MAX_BATCH_NARS, BATCH_BYTES)) {
    const stored = await uploadBatch(
      base,
      opts.token,
      batch,
      opts.narSource ?? 'node',
      opts.signal,
      {
        onBytes: (n, path) => {
          progress.bytesDone += n;
          opts.onProgress?.({ ...progress, current: path });
        },
        onPath: () => {
          progress.pathsDone++;
          opts.onProgress?.({ ...progress, current: undefined });
        },
      },
      pool,
      headers,
    );
    uploaded.push(...stored);
  }
  return { uploaded, skipped: closure.length - missing.size, bytes: progress.bytesDone };
}

/** The paths ordered so that every path comes after the ones it references (among them). */
export function referencesFirst(infos: readonly PathInfo[]): PathInfo[] {
  const byPath = new Map(infos.map((i) => [i.path, i]));
  const waitingOn = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  for (const info of infos) {
    const deps = new Set(info.references.filter((r) => r !== info.path && byPath.has(r)));
    waitingOn.set(info.path, deps.size);
    for (const d of deps) {
      const list = dependents.get(d);
      if (list) list.push(info.path);
      else dependents.set(d, [info.path]);
    }
  }
  const ready = infos.filter((i) => waitingOn.get(i.path) === 0).map((i) => i.path);
  const out: PathInfo[] = [];
  for (let k = 0; k < ready.length; k++) {
    const path = ready[k]!;
    out.push(byPath.get(path)!);
    for (const dep of dependents.get(path) ?? []) {
      const left = waitingOn.get(dep)! - 1;
      waitingOn.set(dep, left);
      if (left === 0) ready.push(dep);
    }
  }
  if (out.length !== byPath.size) {
    throw new PushError(
      'PUSH_CYCLE',
      'some paths reference each other in a cycle; nix stores cannot contain that',
    );
  }
  return out;
}

/** Consecutive slices of at most `maxPaths` paths and `maxBytes` NAR bytes (a larger NAR alone). */
export function batchesOf(ordered: readonly PathInfo[], maxPaths: number, maxBytes: number): PathInfo[][] {
  const out: PathInfo[][] = [];
  let cur: PathInfo[] = [];
  let bytes = 0;
  for (const info of ordered) {
    if (cur.length > 0 && (cur.length >= maxPaths || bytes + info.narSize > maxBytes)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(info);
    bytes += info.narSize;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/**
 * node:http's request, or node:https's for an https coordinator: node:https loads node:tls and with it
 * crypto's X.509 code, which a push over plain http never uses (~5 ms of a cold `mxc push`).
 */
async function requestFor(url: URL): Promise<typeof http.request> {
  return url.protocol === 'https:' ? (await import('node:https')).request : http.request;
}

function authHeaders(token: string | undefined): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** Paths per `POST /api/cache/missing` (the coordinator's MAX_MISSING_PATHS). */
const MISSING_SLICE = 10_000;

/** The paths the cache lacks; `onSent` is called once the first question was handed to the system. */
async function askMissing(
  base: URL,
  token: string | undefined,
  paths: string[],
  signal?: AbortSignal,
  onSent?: () => void,
) {
  const out: string[] = [];
  for (let i = 0; i < paths.length; i += MISSING_SLICE) {
    out.push(
      ...(await askMissingSlice(
        base,
        token,
        paths.slice(i, i + MISSING_SLICE),
        signal,
        i === 0 ? onSent : undefined,
      )),
    );
  }
  return out;
}

async function askMissingSlice(
  base: URL,
  token: string | undefined,
  paths: string[],
  signal?: AbortSignal,
  onSent?: () => void,
) {
  const url = new URL('api/cache/missing', base);
  let res: HttpAnswer;
  try {
    // node:http, not fetch: fetch loads undici, whose WebAssembly HTTP parser took ~75 ms of CPU to
    // compile in a fresh `mxc push` (perf), more than the push's own work on the client.
    const body = Buffer.from(JSON.stringify({ paths }));
    const req = (await requestFor(url))(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': body.length, ...authHeaders(token) },
      signal,
    });
    const answer = answerOf(req);
    if (onSent) req.once('finish', onSent);
    req.end(body);
    res = await answer;
  } catch (err) {
    throw new PushError(
      'PUSH_UNREACHABLE',
      `cannot reach the coordinator at ${base.origin}: ${String(err)}`,
      {
        cause: err,
      },
    );
  }
  let json: unknown = null;
  try {
    json = JSON.parse(res.text);
  } catch {
    // Reported below with the status.
  }
  if (res.status < 200 || res.status >= 300) throw errorFrom(res.status, json, res.text, url);
  const missing = (json as { data?: { missing?: unknown } } | null)?.data?.missing;
  if (!Array.isArray(missing))
    throw new PushError('PUSH_BAD_RESPONSE', `${url} answered without data.missing`);
  return missing.map(String);
}

function errorFrom(status: number, body: unknown, text: string, url: URL): PushError {
  const e = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  if (e && typeof e.code === 'string') return new PushError(e.code, String(e.message ?? e.code), { status });
  return new PushError('PUSH_HTTP_ERROR', `${url} answered ${status}: ${text.slice(0, 300)}`, { status });
}

/** Where a NAR comes from: read in-process (default), or `nix-store --dump` piped in. */
export type NarSource = 'node' | 'nix-store';

interface NarProducer {
  stream: NodeJS.ReadableStream;
  /** Stops producing (the server refused or already has the path). */
  cancel(): Promise<void>;
  /** Resolves once the whole NAR was produced; rejects when producing it failed. */
  finished(): Promise<void>;
}

async function produceNar(path: string, source: NarSource, signal?: AbortSignal): Promise<NarProducer> {
  if (source === 'node') {
    const stream = narStream(path);
    return {
      stream,
      cancel: async () => {
        stream.destroy();
      },
      finished: async () => {},
    };
  }
  const dump = await runStreaming('nix-store', ['--dump', path], { signal });
  return {
    stream: dump.stdout,
    cancel: async () => {
      dump.kill();
      await dump.done.catch(() => {});
    },
    finished: async () => {
      try {
        await dump.done;
      } catch (err) {
        const e = err as CommandError;
        throw new PushError(
          'PUSH_DUMP_FAILED',
          `nix-store --dump ${path} failed (exit ${e.exitCode}): ${e.stderr.trim()}`,
          { cause: err },
        );
      }
    },
  };
}

/** NARs of at most this size are read ahead into memory, this many paths ahead of the one being sent. */
const READ_AHEAD_MAX_NAR = 4 * 1024 * 1024;
const READ_AHEAD_PATHS = 8;

/** A produced NAR read whole (small paths: reading several at once hides the per-file waits). */
async function readWhole(path: string, source: NarSource, signal?: AbortSignal): Promise<Buffer[]> {
  const nar = await produceNar(path, source, signal);
  const chunks: Buffer[] = [];
  for await (const c of nar.stream as AsyncIterable<Buffer>) chunks.push(c);
  await nar.finished();
  return chunks;
}

/**
 * Buffers for small paths' frames, taken again once the socket has sent a frame. A new buffer a frame
 * made the kernel fault in and zero fresh pages for every NAR (~4,600 for the cache bench's 17.9 MiB):
 * reading its 301 paths into fresh buffers took ~39 ms and ~62 ms of CPU in a new process, into reused
 * memory ~29 ms and ~50 ms. Buffers come in power-of-two sizes; a few of each are kept.
 */
export class FramePool {
  private readonly free = new Map<number, Buffer[]>();
  /** The buffers `take` handed out and not yet given back. */
  private readonly lent = new WeakSet<Buffer>();

  /** A buffer of exactly `size` bytes (its contents undefined). */
  take(size: number): Buffer {
    const capacity = Math.max(FRAME_MIN_CAPACITY, 2 ** Math.ceil(Math.log2(size)));
    const whole = this.free.get(capacity)?.pop() ?? Buffer.allocUnsafeSlow(capacity);
    const frame = whole.subarray(0, size);
    this.lent.add(frame);
    return frame;
  }

  /** Takes back a buffer once nothing reads it any more; any other buffer is left alone. */
  give(frame: Buffer): void {
    if (!this.lent.delete(frame)) return;
    const whole = Buffer.from(frame.buffer, 0, frame.buffer.byteLength);
    const list = this.free.get(whole.length);
    if (!list) this.free.set(whole.length, [whole]);
    else if (list.length < FRAMES_KEPT) list.push(whole);
  }
}

const FRAME_MIN_CAPACITY = 64 * 1024;
/** Buffers kept a size: about what the socket and the request hold unsent at once. */
const FRAMES_KEPT = 16;

/**
 * A small path's whole frame, header then NAR, in one buffer written in place by blocking reads: most
 * of a closure is small paths, and for them this costs a fraction of the streamed dump's CPU.
 */
function wholeFrame(info: PathInfo, header: Buffer, pool: FramePool): Buffer {
  const frame = pool.take(header.length + info.narSize);
  header.copy(frame);
  try {
    narInto(info.path, frame, header.length);
  } catch (err) {
    throw new PushError('PUSH_DUMP_FAILED', `cannot read ${info.path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return frame;
}

/**
 * One batch frame's header: u32 big-endian length, then the JSON claim (spec/cache.ts NarBatchHeader),
 * written into one buffer.
 */
function frameHeader(info: PathInfo): Buffer {
  const header: NarBatchHeader = {
    path: info.path.slice(STORE_DIR.length + 1),
    nar_hash: info.narHash,
    nar_size: info.narSize,
    references: info.references.map((r) => r.slice(STORE_DIR.length + 1)),
    ...(info.deriver ? { deriver: info.deriver.slice(STORE_DIR.length + 1) } : {}),
  };
  const json = JSON.stringify(header);
  const length = Buffer.byteLength(json, 'utf8');
  const out = Buffer.allocUnsafe(4 + length);
  out.writeUInt32BE(length, 0);
  out.write(json, 4, 'utf8');
  return out;
}

/**
 * The batch body: every path's frame, in order, then the end mark. Read in process (the default), a
 * small NAR is one buffer with its header; through nix-store, small NARs are read a few paths ahead.
 */
async function* batchBody(
  batch: readonly PathInfo[],
  headers: readonly Buffer[],
  source: NarSource,
  signal: AbortSignal | undefined,
  on: { onBytes: (n: number, path: string) => void; onPath: () => void },
  pool: FramePool,
): AsyncGenerator<Buffer> {
  const ahead = new Map<number, Promise<Buffer[]>>();
  const readAhead = (from: number) => {
    for (let j = from; j < Math.min(batch.length, from + READ_AHEAD_PATHS); j++) {
      if (ahead.has(j) || batch[j]!.narSize > READ_AHEAD_MAX_NAR) continue;
      const p = readWhole(batch[j]!.path, source, signal);
      p.catch(() => {}); // awaited in turn; a failure must not go unhandled meanwhile
      ahead.set(j, p);
    }
  };
  for (const [i, info] of batch.entries()) {
    if (source === 'node' && info.narSize <= READ_AHEAD_MAX_NAR) {
      signal?.throwIfAborted();
      const frame = wholeFrame(info, headers[i]!, pool);
      on.onBytes(info.narSize, info.path);
      yield frame;
      on.onPath();
      continue;
    }
    if (source !== 'node') readAhead(i);
    yield headers[i]!;
    const whole = ahead.get(i);
    ahead.delete(i);
    if (whole) {
      for (const c of await whole) {
        on.onBytes(c.length, info.path);
        yield c;
      }
    } else {
      const nar = await produceNar(info.path, source, signal);
      try {
        for await (const c of nar.stream as AsyncIterable<Buffer>) {
          on.onBytes(c.length, info.path);
          yield c;
        }
      } catch (err) {
        await nar.cancel();
        throw err;
      }
      await nar.finished();
    }
    on.onPath();
  }
  yield Buffer.alloc(4); // the end mark: a zero header length
}

/**
 * Writes the body to the request as fast as its socket takes it, each frame's buffer back to the pool
 * once sent; ends the request after the last. Stops when producing fails (`onProduceError`, and the
 * request is destroyed) or the request closes first (the server answered early).
 */
async function sendBody(
  body: AsyncGenerator<Buffer>,
  req: http.ClientRequest,
  pool: FramePool,
  onProduceError: (err: unknown) => void,
): Promise<void> {
  let done = false;
  try {
    for (;;) {
      let next: IteratorResult<Buffer>;
      try {
        next = await body.next();
      } catch (err) {
        done = true;
        onProduceError(err);
        req.destroy(err as Error);
        throw err;
      }
      if (next.done) break;
      const chunk = next.value;
      // Called once the socket sent the chunk (with an error when it never will: then not taken again).
      const fits = req.write(chunk, (err) => {
        if (!err) pool.give(chunk);
      });
      if (!fits) await drained(req);
    }
    done = true;
    req.end();
  } finally {
    if (!done) await body.return(undefined);
  }
}

/** Resolves when the request can take more; rejects when it closes or fails first. */
function drained(req: http.ClientRequest): Promise<void> {
  return new Promise((resolve, reject) => {
    if (req.destroyed) {
      reject(new Error('the request was closed'));
      return;
    }
    const settle = (err?: Error) => {
      req.off('drain', onDrain).off('close', onClose).off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => settle();
    const onClose = () => settle(new Error('the request was closed before its body was sent'));
    const onError = (err: Error) => settle(err);
    req.on('drain', onDrain).on('close', onClose).on('error', onError);
  });
}

/** POSTs one batch; returns the paths it stored, in order. */
async function uploadBatch(
  base: URL,
  token: string | undefined,
  batch: readonly PathInfo[],
  source: NarSource,
  signal: AbortSignal | undefined,
  on: { onBytes: (n: number, path: string) => void; onPath: () => void },
  pool: FramePool,
  headers: ReadonlyMap<string, Buffer>,
): Promise<string[]> {
  const url = new URL('api/cache/nars', base);
  const frames = batch.map((i) => headers.get(i.path) ?? frameHeader(i));
  const length = frames.reduce((n, f, i) => n + f.length + batch[i]!.narSize, 4);
  const req = (await requestFor(url))(url, {
    method: 'POST',
    headers: { 'content-type': NAR_BATCH_MEDIA_TYPE, 'content-length': length, ...authHeaders(token) },
    signal,
  });
  const response = answerOf(req);
  // The server may answer (and close) before reading the whole body, e.g. to refuse a NAR; then the
  // answer matters, not the broken pipe. A failure to read a NAR here is reported as such.
  let produceError: unknown = null;
  const body = batchBody(batch, frames, source, signal, on, pool);
  const sent = sendBody(body, req, pool, (err) => {
    produceError ??= err;
  }).catch((err: unknown) => err);
  let answer: HttpAnswer;
  try {
    answer = await response;
  } catch (err) {
    if (produceError instanceof PushError) throw produceError;
    throw new PushError('PUSH_UPLOAD_FAILED', `uploading to ${base.origin} failed: ${String(err)}`, {
      cause: produceError ?? err,
    });
  }
  let json: unknown = null;
  try {
    json = JSON.parse(answer.text);
  } catch {
    // Reported with the status.
  }
  if (answer.status >= 400) {
    req.destroy();
    throw errorFrom(answer.status, json, answer.text, url);
  }
  await sent;
  const parsed = NarBatchAnswer.safeParse(json);
  if (!parsed.success) throw new PushError('PUSH_BAD_RESPONSE', `${url} answered without data.stored`);
  return parsed.data.data.stored.map((p) => p.path);
}
