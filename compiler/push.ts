/**
 * `mxc push`'s engine: uploads the closure of some store paths to the coordinator's binary cache,
 * only the paths it lacks, references before referrers, a few at a time, each NAR streamed from
 * `nix-store --dump` straight into the request body.
 */

import http from 'node:http';
import https from 'node:https';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type CommandError, runStreaming } from '../lib/exec.js';
import { narStream } from '../lib/nar-dump.js';
import { hashPart, STORE_DIR } from '../lib/nar-info.js';
import { closureOf } from '../lib/nix.js';
import { type PathInfo, queryPathInfos } from '../lib/path-info.js';

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
  /** Uploads in flight at once; default 4. */
  concurrency?: number;
  onProgress?: (p: PushProgress) => void;
  signal?: AbortSignal;
  /** How NARs are produced; default `node` (no process per path), `nix-store` pipes `nix-store --dump`. */
  narSource?: NarSource;
}

export interface PushResult {
  /** Store paths uploaded by this run, in upload completion order. */
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
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'PushError';
  }
}

/** The closure in the local store; a root that is not there is the user's mistake, said plainly. */
async function localClosure(paths: string[], signal?: AbortSignal): Promise<string[]> {
  try {
    return await closureOf(paths, { signal });
  } catch (err) {
    const stderr = (err as CommandError).stderr ?? '';
    const gone = [...stderr.matchAll(/path '([^']+)' is not valid/g)].map((m) => m[1]!);
    if (gone.length === 0) throw err;
    throw new PushError(
      'PUSH_PATH_MISSING',
      `the job's closure names ${gone.join(', ')}, which is not in this machine's Nix store: ` +
        'build the job here first (nix-build …), or pass --no-push when the coordinator’s cache already has it',
      { cause: err },
    );
  }
}

/** Longest X-Nix-References header we send as basenames; past it we send hash parts (the cache resolves them). */
const MAX_REFS_HEADER = 8 * 1024;

/** Pushes the closure of `opts.paths`; safe to re-run after a failure (it resumes per path). */
export async function pushClosure(opts: PushOptions): Promise<PushResult> {
  const base = new URL(opts.coordinator.endsWith('/') ? opts.coordinator : `${opts.coordinator}/`);
  const closure = await localClosure(opts.paths, opts.signal);
  const missing = await askMissing(base, opts.token, closure, opts.signal);
  const infos = missing.length > 0 ? await queryPathInfos(missing, { signal: opts.signal }) : [];
  const progress: PushProgress = {
    pathsDone: 0,
    pathsTotal: infos.length,
    bytesDone: 0,
    bytesTotal: infos.reduce((n, i) => n + i.narSize, 0),
  };
  opts.onProgress?.({ ...progress });
  const uploaded = await uploadInOrder(infos, Math.max(1, opts.concurrency ?? 4), async (info) => {
    progress.current = info.path;
    await uploadPath(base, opts.token, info, opts.narSource ?? 'node', opts.signal, (n) => {
      progress.bytesDone += n;
      opts.onProgress?.({ ...progress, current: info.path });
    });
    progress.pathsDone++;
    opts.onProgress?.({ ...progress, current: undefined });
  });
  return { uploaded, skipped: closure.length - missing.length, bytes: progress.bytesDone };
}

/**
 * Runs `upload` for every path once all of its references in `infos` are done, at most `limit` at
 * a time. The first failure stops new uploads; the ones in flight finish before it is thrown.
 */
export async function uploadInOrder(
  infos: PathInfo[],
  limit: number,
  upload: (info: PathInfo) => Promise<void>,
): Promise<string[]> {
  const byPath = new Map(infos.map((i) => [i.path, i]));
  const waitingOn = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  for (const info of infos) {
    const deps = new Set(info.references.filter((r) => r !== info.path && byPath.has(r)));
    waitingOn.set(info.path, deps.size);
    for (const d of deps) dependents.set(d, [...(dependents.get(d) ?? []), info.path]);
  }
  const ready = infos.filter((i) => waitingOn.get(i.path) === 0).map((i) => i.path);
  const done: string[] = [];
  let failure: unknown = null;
  let inFlight = 0;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (failure === null && inFlight < limit && ready.length > 0) {
        const path = ready.shift()!;
        inFlight++;
        upload(byPath.get(path)!).then(
          () => {
            inFlight--;
            done.push(path);
            for (const dep of dependents.get(path) ?? []) {
              const left = waitingOn.get(dep)! - 1;
              waitingOn.set(dep, left);
              if (left === 0) ready.push(dep);
            }
            pump();
          },
          (err: unknown) => {
            inFlight--;
            failure ??= err;
            pump();
          },
        );
      }
      if (inFlight === 0) resolve();
    };
    pump();
  });
  if (failure !== null) throw failure;
  if (done.length !== infos.length) {
    throw new PushError(
      'PUSH_CYCLE',
      'some paths reference each other in a cycle; nix stores cannot contain that',
    );
  }
  return done;
}

function authHeaders(token: string | undefined): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** Paths per `POST /api/cache/missing` (the coordinator's MAX_MISSING_PATHS). */
const MISSING_SLICE = 10_000;

async function askMissing(base: URL, token: string | undefined, paths: string[], signal?: AbortSignal) {
  const out: string[] = [];
  for (let i = 0; i < paths.length; i += MISSING_SLICE) {
    out.push(...(await askMissingSlice(base, token, paths.slice(i, i + MISSING_SLICE), signal)));
  }
  return out;
}

async function askMissingSlice(base: URL, token: string | undefined, paths: string[], signal?: AbortSignal) {
  const url = new URL('api/cache/missing', base);
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...authHeaders(token) },
      body: JSON.stringify({ paths }),
      signal,
    });
  } catch (err) {
    throw new PushError(
      'PUSH_UNREACHABLE',
      `cannot reach the coordinator at ${base.origin}: ${String(err)}`,
      {
        cause: err,
      },
    );
  }
  const body = await readJson(res, url);
  const missing = (body as { data?: { missing?: unknown } }).data?.missing;
  if (!Array.isArray(missing))
    throw new PushError('PUSH_BAD_RESPONSE', `${url} answered without data.missing`);
  return missing.map(String);
}

async function readJson(res: Response, url: URL): Promise<unknown> {
  const text = await res.text();
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    // Reported below with the status.
  }
  if (!res.ok) throw errorFrom(res.status, body, text, url);
  return body;
}

function errorFrom(status: number, body: unknown, text: string, url: URL): PushError {
  const e = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  if (e && typeof e.code === 'string') return new PushError(e.code, String(e.message ?? e.code));
  return new PushError('PUSH_HTTP_ERROR', `${url} answered ${status}: ${text.slice(0, 300)}`);
}

function referencesHeader(info: PathInfo): string {
  const bases = info.references.map((r) => r.slice(STORE_DIR.length + 1)).join(' ');
  if (bases.length <= MAX_REFS_HEADER) return bases;
  return info.references.map((r) => hashPart(r.slice(STORE_DIR.length + 1))).join(' ');
}

class ByteCounter extends Transform {
  constructor(private readonly onBytes: (n: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.onBytes(chunk.length);
    cb(null, chunk);
  }
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

/** PUTs one path: its NAR is the streamed body; the claim travels in X-Nix-* headers. */
async function uploadPath(
  base: URL,
  token: string | undefined,
  info: PathInfo,
  source: NarSource,
  signal: AbortSignal | undefined,
  onBytes: (n: number) => void,
): Promise<void> {
  const basename = info.path.slice(STORE_DIR.length + 1);
  const url = new URL(`api/cache/nar/${encodeURIComponent(basename)}`, base);
  const headers: Record<string, string | number> = {
    'content-type': 'application/octet-stream',
    'content-length': info.narSize,
    'x-nix-nar-hash': info.narHash,
    'x-nix-nar-size': info.narSize,
    'x-nix-references': referencesHeader(info),
    ...authHeaders(token),
  };
  if (info.deriver) headers['x-nix-deriver'] = info.deriver.slice(STORE_DIR.length + 1);

  const nar = await produceNar(info.path, source, signal);
  const req = (url.protocol === 'https:' ? https : http).request(url, { method: 'PUT', headers, signal });
  const response = new Promise<{ status: number; text: string }>((resolve, reject) => {
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  // The server may answer (and close) before reading the whole body, e.g. to refuse it; then the
  // answer matters, not the broken pipe.
  const sent = pipeline(nar.stream, new ByteCounter(onBytes), req).catch((err: unknown) => err);
  let answer: { status: number; text: string };
  try {
    answer = await response;
  } catch (err) {
    await nar.cancel();
    throw new PushError(
      'PUSH_UPLOAD_FAILED',
      `uploading ${info.path} to ${base.origin} failed: ${String(err)}`,
      {
        cause: err,
      },
    );
  }
  let body: unknown = null;
  try {
    body = JSON.parse(answer.text);
  } catch {
    // Reported with the status.
  }
  if (answer.status >= 400) {
    await nar.cancel();
    throw errorFrom(answer.status, body, answer.text, url);
  }
  // Already in the cache: the server answered without reading the body, so the NAR is cut short.
  if ((body as { data?: { created?: unknown } } | null)?.data?.created === false) {
    await nar.cancel();
    await sent;
    return;
  }
  // The server verified the hash of all it got before answering 2xx, so a late socket error is harmless.
  await sent;
  await nar.finished();
}
