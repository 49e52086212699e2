/**
 * The coordinator's signed Nix binary cache as a fastify plugin: the read side nix itself talks to
 * (`/cache/…`) and the write side `mxc push` uses (`/api/cache/…`).
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { serializerCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { type ZodType, z } from 'zod';
import { ApiError } from '../../spec/api.js';
import {
  CacheKeyAnswer,
  MAX_BATCH_NARS,
  MAX_MISSING_PATHS,
  MissingAnswer,
  MissingRequest,
  NAR_BATCH_MEDIA_TYPE,
  NarBatchAnswer,
  type StoredPath,
  UploadAnswer,
} from '../../spec/cache.js';
import type { S3Location } from '../../spec/s3-location.js';
import { MxcError } from '../errors.js';
import { isDatabaseUnavailable } from '../store/db.js';
import { ingestBatch } from './batch.js';
import { parseUploadClaim } from './claim.js';
import { CacheError, sendCacheError } from './errors.js';
import type { CacheCompression, IngestResult } from './ingest.js';
import {
  DEFAULT_KEY_NAME,
  loadKeyFile,
  loadOrCreateKey,
  loadOrCreateSharedKey,
  SECRET_KEY_FILE,
  type SharedKeyStore,
} from './key.js';
import { DirectoryStorage } from './storage-dir.js';
import type { S3Credentials } from './storage-s3.js';
import { CacheStore, type CacheStoreOptions } from './store.js';

export { CacheError, type CacheErrorCode } from './errors.js';
export { type CacheKey, DEFAULT_KEY_NAME } from './key.js';
export type { CacheStorage } from './storage.js';
export { CacheStore, DEFAULT_MAX_NAR_BYTES } from './store.js';

export interface CacheOptions {
  /** The cache lives in `<dataDir>/cache` (nar/, narinfo/, tmp/, key files). */
  dataDir: string;
  /** Name of the signing key; default `mxc-1`. */
  keyName?: string;
  /** Decides whether a request may read (narinfo/nar) or write (upload). Return false → 401. */
  authorize?: (req: FastifyRequest, access: 'read' | 'write') => boolean;
  /** Largest uncompressed NAR an upload may have; default 8 GiB. */
  maxNarBytes?: number;
  /** How NARs are stored: `none` (default) or `br` (see ingest.ts CacheCompression). */
  compression?: CacheCompression;
  /** Brotli quality for NARs stored `br` (0–11); default 2 (~100 MiB/s, about quality 4's ratio on binaries). */
  brotliQuality?: number;
  /** How long a narinfo held in memory is served without a stat of its file; default 1000 ms. */
  narinfoRevalidateMs?: number;
  /** Use this store instead of opening `<dataDir>/cache` (when the app needs it elsewhere too). */
  store?: CacheStore;
  /** Where a narinfo or NAR found corrupt on disk is said; the app's log by default. */
  onCorrupt?: CacheStoreOptions['onCorrupt'];
  /** Who sent a request (a token's name), recorded with each path it uploads. */
  pusherOf?: (req: FastifyRequest) => string | undefined;
  /**
   * Records uploads before they are published and returns, for each, the NarHash of the first upload
   * of that path (provenance, and the arbiter between coordinators sharing the cache); see ClaimPaths.
   */
  claimPaths?: (pushes: readonly { path: string; narHash: string; pushedBy: string }[]) => Promise<string[]>;
  /** Called after a path was stored (provenance: who pushed it, with which NarHash). */
  onStored?: (push: { path: string; narHash: string; pushedBy: string }) => Promise<void>;
}

/** The cache directory inside a coordinator data dir. */
export function cacheDir(dataDir: string): string {
  return join(dataDir, 'cache');
}

/** Creates the signing key on first start; returns its name and `name:base64` public key. */
export async function ensureCacheKey(
  dataDir: string,
  keyName = DEFAULT_KEY_NAME,
): Promise<{ name: string; publicKey: string }> {
  const key = await loadOrCreateKey(cacheDir(dataDir), keyName);
  return { name: key.name, publicKey: key.publicKey };
}

export interface CacheStorageOptions {
  /** A cache directory shared by several coordinators (MXC_CACHE_DIR); default `<dataDir>/cache`. */
  dir?: string;
  /** An S3-compatible bucket instead of a directory (MXC_CACHE_S3_URL). */
  s3?: { location: S3Location; credentials?: S3Credentials };
  /** A signing key file given to every coordinator (MXC_CACHE_KEY_FILE). */
  keyFile?: string;
  /** Where coordinators sharing a database keep one key (used when no key file is given). */
  sharedKey?: SharedKeyStore;
}

/**
 * The signing key: the key file when given; else the one in a cache directory that has one (as every
 * coordinator before shared keys made it); else the database's shared key; else one made in the
 * cache directory (or `<dataDir>/cache` for a bucket).
 */
async function openKey(dataDir: string, dir: string, opts: CacheStorageOptions & { keyName?: string }) {
  const keyName = opts.keyName ?? DEFAULT_KEY_NAME;
  if (opts.keyFile) return loadKeyFile(opts.keyFile);
  const ownDir = opts.s3 ? cacheDir(dataDir) : dir;
  const hasFile = await access(join(ownDir, SECRET_KEY_FILE)).then(
    () => true,
    () => false,
  );
  if (!hasFile && opts.sharedKey) return loadOrCreateSharedKey(opts.sharedKey, keyName);
  return loadOrCreateKey(ownDir, keyName);
}

/** Opens (and prepares) the cache store of a data dir: its storage, checked, and its signing key. */
export async function openCacheStore(
  dataDir: string,
  opts: Pick<
    CacheOptions,
    'keyName' | 'maxNarBytes' | 'compression' | 'brotliQuality' | 'narinfoRevalidateMs' | 'onCorrupt'
  > &
    CacheStorageOptions = {},
): Promise<CacheStore> {
  const dir = opts.dir ?? cacheDir(dataDir);
  const key = await openKey(dataDir, dir, opts);
  // The AWS SDK is loaded only when a bucket is configured.
  const storage = opts.s3
    ? new (await import('./storage-s3.js')).S3Storage({ ...opts.s3, spoolRoot: join(dataDir, 'cache-spool') })
    : new DirectoryStorage(dir);
  const store = new CacheStore(storage, key, opts);
  try {
    await store.init();
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
  return store;
}

export { MAX_MISSING_PATHS } from '../../spec/cache.js';

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

const NIX_CACHE_INFO = 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n';

/** Coded refusals, as every cache route sends them. */
const refusals = { '4XX': ApiError, '5XX': ApiError } as const;

const text = (description: string, type: string) => ({
  description,
  content: { [type]: { schema: z.string() } },
});

/** A path parameter as fastify hands it over; its form is checked by the handler (coded refusals). */
const FileParams = z.object({ file: z.string().max(1024) });
const WildcardParams = z.object({ '*': z.string().max(1024) });
/** A single upload's claim may come in the query instead of X-Nix-* headers (see claim.ts). */
const ClaimQuery = z.object({
  narHash: z.string().max(200).optional(),
  narSize: z.string().max(40).optional(),
  references: z
    .string()
    .max(1024 * 1024)
    .optional(),
  deriver: z.string().max(400).optional(),
});

/** What the upload side answers for one stored path. */
function storedPath(result: IngestResult): StoredPath {
  const { info } = result;
  return {
    path: info.storePath,
    created: result.created,
    nar_hash: info.narHash,
    nar_size: info.narSize,
    file_size: info.fileSize,
  };
}

/**
 * An upload-side answer built here from typed values, sent as JSON text: the route's zod serializer
 * would check each of its items again, for a 301-path batch ~6 ms of a fresh cache's CPU at the push's
 * very end (its profile), and a few ms for its `missing`. The route's schema still documents it.
 */
function sendJson(reply: FastifyReply, answer: MissingAnswer | NarBatchAnswer): FastifyReply {
  return reply.type('application/json; charset=utf-8').send(JSON.stringify(answer));
}

/** Registered with `app.register(cachePlugin, opts)`; routes are absolute, not prefixed. */
export async function cachePlugin(app: FastifyInstance, opts: CacheOptions): Promise<void> {
  const store =
    opts.store ??
    (await openCacheStore(opts.dataDir, {
      ...opts,
      onCorrupt: opts.onCorrupt ?? ((p) => app.log.error(p, p.message)),
    }));
  // A store passed in belongs to the caller; one opened here is closed with the app.
  if (!opts.store) app.addHook('onClose', () => store.close());
  const maxNarBytes = store.maxNarBytes;
  const r = app.withTypeProvider<ZodTypeProvider>();

  // The cache's refusals keep their own codes (CACHE_…), with or without the coordinator's app around it.
  app.setValidatorCompiler(({ schema, httpPart }) => (value: unknown) => {
    const parsed = (schema as unknown as ZodType).safeParse(value);
    if (parsed.success) return { value: parsed.data };
    const where = httpPart === 'body' ? 'the body must be {"paths": [store paths…]}' : `bad ${httpPart}`;
    return {
      error: new CacheError(
        'CACHE_BAD_REQUEST',
        400,
        `${where}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`,
      ),
    };
  });
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler((err: Error & { statusCode?: number }, req, reply) => {
    if (err instanceof CacheError) return sendCacheError(reply, err);
    // The app's access hook refuses with its own coded errors (CACHE_UNAUTHORIZED, CACHE_FORBIDDEN, …).
    if (err instanceof MxcError && err.status < 500) {
      return reply
        .code(err.status)
        .send({ error: { code: err.code, message: err.message, details: err.details } });
    }
    // A push's claims need the database: while it is unreachable, the coordinator's own handler (this
    // one's parent) answers its retryable 503 DATABASE_UNAVAILABLE and logs the outage once in a while.
    if (isDatabaseUnavailable(err)) throw err;
    const status = err.statusCode ?? 500;
    if (status >= 500) {
      req.log.error({ err }, 'internal error in the binary cache');
      return reply.code(500).send({
        error: {
          code: 'INTERNAL',
          message: `internal error; the coordinator log has the details (request id ${req.id})`,
        },
      });
    }
    // fastify's own refusals (a body it could not parse, …) in the cache's words.
    if (!SAFE.has(req.method)) reply.header('connection', 'close');
    return reply.code(status).send({ error: { code: 'CACHE_BAD_REQUEST', message: err.message } });
  });

  const guard = (access: 'read' | 'write') => async (req: FastifyRequest, reply: FastifyReply) => {
    if (!opts.authorize || opts.authorize(req, access)) return;
    // An unread upload body would otherwise be drained byte by byte before the socket is reused.
    if (access === 'write') reply.header('connection', 'close');
    return reply.code(401).send({
      error: {
        code: 'CACHE_UNAUTHORIZED',
        message: `this request needs ${access} access to the binary cache; send "Authorization: Bearer <token>" with a valid token`,
      },
    });
  };
  const read = opts.authorize ? { onRequest: guard('read') } : {};
  const write = opts.authorize ? { onRequest: guard('write') } : {};

  // Upload bodies stay streams (parsed by nobody) so a NAR is never held in memory. Any content type
  // gets here so the handler can answer a wrong one with a coded error instead of fastify's own.
  const passStream = (
    _req: FastifyRequest,
    payload: NodeJS.ReadableStream,
    done: (e: Error | null, b?: unknown) => void,
  ) => done(null, payload);
  app.addContentTypeParser('application/octet-stream', passStream);
  app.addContentTypeParser('*', passStream);

  r.get(
    '/cache/nix-cache-info',
    {
      ...read,
      config: { access: 'cache-read' },
      schema: {
        summary: 'Nix binary cache description (store dir, priority)',
        tags: ['cache'],
        response: { 200: text('nix-cache-info', 'text/x-nix-cache-info'), ...refusals },
      },
    },
    async (_req, reply) => reply.type('text/x-nix-cache-info').send(NIX_CACHE_INFO),
  );

  r.get(
    '/cache/:file',
    {
      ...read,
      config: { access: 'cache-read' },
      schema: {
        summary: 'The signed narinfo of a store path, by hash part (`<hash>.narinfo`)',
        tags: ['cache'],
        params: FileParams,
        response: {
          200: text('a narinfo', 'text/x-nix-narinfo'),
          404: text('not in this cache', 'text/plain'),
          ...refusals,
        },
      },
    },
    (req, reply): void => {
      const { file } = req.params;
      if (!file.endsWith('.narinfo')) {
        reply.code(404).type('text/plain').send('not found\n');
        return;
      }
      const hash = file.slice(0, -'.narinfo'.length);
      // The hot path of every substitution: a published narinfo is answered from memory, no I/O.
      const hit = store.cachedNarinfo(hash);
      if (hit) {
        reply.type('text/x-nix-narinfo').send(hit.text);
        return;
      }
      store.narinfoText(hash).then(
        (text) =>
          // Nix reads any 404 as "not in this cache"; other statuses would disable the substituter.
          text === null
            ? reply.code(404).type('text/plain').send('not found\n')
            : reply.type('text/x-nix-narinfo').send(text),
        (err: unknown) => sendCacheError(reply, err),
      );
    },
  );

  r.get(
    '/cache/nar/:file',
    {
      ...read,
      config: { access: 'cache-read' },
      schema: {
        summary: 'A compressed NAR, by the name its narinfo gives',
        tags: ['cache'],
        params: FileParams,
        response: {
          200: text('the compressed NAR', 'application/x-nix-nar'),
          404: text('not in this cache', 'text/plain'),
          ...refusals,
        },
      },
    },
    async (req, reply) => {
      const nar = await store.getNar(req.params.file);
      if (!nar) return reply.code(404).type('text/plain').send('not found\n');
      reply.header('content-length', nar.size).header('cache-control', 'public, max-age=31536000, immutable');
      // Bytes read whole, or a stream, sent as is (the declared string is what the document shows).
      return reply.type('application/x-nix-nar').send((nar.bytes ?? nar.stream) as unknown as string);
    },
  );

  r.get(
    '/api/cache/key',
    {
      ...read,
      config: { access: 'cache-read' },
      schema: {
        summary: "The cache's public signing key (what agents and nix trust)",
        tags: ['cache'],
        response: { 200: CacheKeyAnswer, ...refusals },
      },
    },
    async () => ({ data: { name: store.key.name, public_key: store.key.publicKey } }),
  );

  r.post(
    '/api/cache/missing',
    {
      ...write,
      config: { access: 'push' },
      bodyLimit: 4 * 1024 * 1024,
      schema: {
        summary: `Which of these store paths the cache lacks (at most ${MAX_MISSING_PATHS} per request)`,
        tags: ['cache'],
        body: MissingRequest,
        response: { 200: MissingAnswer, ...refusals },
      },
    },
    async (req, reply) => {
      const answer: MissingAnswer = { data: { missing: await store.missing(req.body.paths) } };
      return sendJson(reply, answer);
    },
  );

  // A wildcard, not `:name`: store path names run to 244 characters, past fastify's maxParamLength.
  r.put(
    '/api/cache/nar/*',
    {
      ...write,
      config: { access: 'push' },
      bodyLimit: maxNarBytes,
      schema: {
        summary:
          'Upload one NAR (raw body); its claim in X-Nix-Nar-Hash, X-Nix-Nar-Size, X-Nix-References, X-Nix-Deriver',
        tags: ['cache'],
        params: WildcardParams,
        querystring: ClaimQuery,
        response: { 200: UploadAnswer, 201: UploadAnswer, ...refusals },
      },
    },
    async (req, reply) => {
      const body = req.body as Readable | undefined;
      try {
        const type = (req.headers['content-type'] ?? '').split(';')[0].trim();
        if (type !== 'application/octet-stream' || !body || typeof body.pipe !== 'function') {
          throw new CacheError(
            'CACHE_UNSUPPORTED_MEDIA_TYPE',
            415,
            'upload the NAR as the raw request body with "Content-Type: application/octet-stream"',
          );
        }
        const claim = parseUploadClaim(req.headers, req.query, maxNarBytes);
        const pushedBy = opts.pusherOf?.(req) ?? 'anonymous';
        const claimPaths = opts.claimPaths;
        const result = await store.put(
          req.params['*'],
          claim,
          body,
          claimPaths && ((claims) => claimPaths(claims.map((c) => ({ ...c, pushedBy })))),
        );
        if (result.created) {
          await opts.onStored?.({ path: result.info.storePath, narHash: result.info.narHash, pushedBy });
        }
        if (!result.created) {
          reply.header('connection', 'close');
          body.resume();
        }
        return reply.code(result.created ? 201 : 200).send({ data: storedPath(result) });
      } catch (err) {
        if (body && !body.readableEnded) reply.header('connection', 'close');
        if (err instanceof CacheError && err.code === 'CACHE_PATH_CONFLICT')
          logConflict(req, req.params['*']);
        return sendCacheError(reply, err);
      }
    },
  );

  r.post(
    '/api/cache/nars',
    {
      ...write,
      config: { access: 'push' },
      bodyLimit: maxNarBytes,
      schema: {
        summary: `Upload up to ${MAX_BATCH_NARS} NARs in one body (${NAR_BATCH_MEDIA_TYPE}: per NAR a u32 big-endian header length, the JSON header, the NAR; a zero length ends it), references before referrers`,
        tags: ['cache'],
        response: { 200: NarBatchAnswer, ...refusals },
      },
    },
    async (req, reply) => {
      const body = req.body as Readable | undefined;
      const pushedBy = opts.pusherOf?.(req) ?? 'anonymous';
      try {
        const type = (req.headers['content-type'] ?? '').split(';')[0].trim();
        if (type !== NAR_BATCH_MEDIA_TYPE || !body || typeof body.pipe !== 'function') {
          throw new CacheError(
            'CACHE_UNSUPPORTED_MEDIA_TYPE',
            415,
            `send the batch as the raw request body with "Content-Type: ${NAR_BATCH_MEDIA_TYPE}"`,
          );
        }
        const claimPaths = opts.claimPaths;
        const results = await ingestBatch(
          store,
          body,
          async (result) => {
            await opts.onStored?.({ path: result.info.storePath, narHash: result.info.narHash, pushedBy });
          },
          claimPaths && ((claims) => claimPaths(claims.map((c) => ({ ...c, pushedBy })))),
        );
        const answer: NarBatchAnswer = { data: { stored: results.map(storedPath) } };
        return sendJson(reply, answer);
      } catch (err) {
        if (body && !body.readableEnded) reply.header('connection', 'close');
        if (err instanceof CacheError && err.code === 'CACHE_PATH_CONFLICT') logConflict(req, err.message);
        return sendCacheError(reply, err);
      }
    },
  );

  function logConflict(req: FastifyRequest, what: string): void {
    req.log.warn(
      { path: what, by: opts.pusherOf?.(req) ?? 'anonymous', ip: req.ip },
      'refused a second, different upload of a cached path (possible cache poisoning)',
    );
  }
}
