/**
 * The coordinator's signed Nix binary cache as a fastify plugin: the read side nix itself talks to
 * (`/cache/…`) and the write side `mxc push` uses (`/api/cache/…`).
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { S3Location } from '../../spec/s3-location.js';
import { parseUploadClaim } from './claim.js';
import { CacheError, sendCacheError } from './errors.js';
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
import { CacheStore } from './store.js';

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
  /** Brotli quality for stored NARs (0–11); default 2 (~100 MiB/s, about quality 4's ratio on binaries). */
  brotliQuality?: number;
  /** How long a narinfo held in memory is served without a stat of its file; default 1000 ms. */
  narinfoRevalidateMs?: number;
  /** Use this store instead of opening `<dataDir>/cache` (when the app needs it elsewhere too). */
  store?: CacheStore;
  /** Who sent a request (a token's name), recorded with each path it uploads. */
  pusherOf?: (req: FastifyRequest) => string | undefined;
  /**
   * Records an upload before it is published and returns the NarHash of the first upload of that path
   * (provenance, and the arbiter between coordinators sharing the cache); see ClaimPath.
   */
  claimPath?: (push: { path: string; narHash: string; pushedBy: string }) => Promise<string>;
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
  opts: Pick<CacheOptions, 'keyName' | 'maxNarBytes' | 'brotliQuality' | 'narinfoRevalidateMs'> &
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

/** Most paths one `POST /api/cache/missing` may ask about; `mxc push` asks in slices of this size. */
export const MAX_MISSING_PATHS = 10_000;

const MissingBody = z
  .object({
    paths: z
      .array(z.string().max(400))
      .max(MAX_MISSING_PATHS, `at most ${MAX_MISSING_PATHS} paths per request; ask in slices`),
  })
  .strict();

const NIX_CACHE_INFO = 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n';

/** Registered with `app.register(cachePlugin, opts)`; routes are absolute, not prefixed. */
export async function cachePlugin(app: FastifyInstance, opts: CacheOptions): Promise<void> {
  const store = opts.store ?? (await openCacheStore(opts.dataDir, opts));
  // A store passed in belongs to the caller; one opened here is closed with the app.
  if (!opts.store) app.addHook('onClose', () => store.close());
  const maxNarBytes = store.maxNarBytes;

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

  // Upload bodies stay streams (parsed by nobody) so a NAR is never held in memory. Any content type
  // gets here so the handler can answer a wrong one with a coded error instead of fastify's own.
  const passStream = (
    _req: FastifyRequest,
    payload: NodeJS.ReadableStream,
    done: (e: Error | null, b?: unknown) => void,
  ) => done(null, payload);
  app.addContentTypeParser('application/octet-stream', passStream);
  app.addContentTypeParser('*', passStream);

  app.get(
    '/cache/nix-cache-info',
    { onRequest: guard('read'), config: { access: 'cache-read' } },
    async (_req, reply) => reply.type('text/x-nix-cache-info').send(NIX_CACHE_INFO),
  );

  app.get<{ Params: { file: string } }>(
    '/cache/:file',
    { onRequest: guard('read'), config: { access: 'cache-read' } },
    (req, reply) => {
      const { file } = req.params;
      if (!file.endsWith('.narinfo')) return reply.code(404).type('text/plain').send('not found\n');
      const hash = file.slice(0, -'.narinfo'.length);
      // The hot path of every substitution: a published narinfo is answered from memory, no I/O.
      const hit = store.cachedNarinfo(hash);
      if (hit) return reply.type('text/x-nix-narinfo').send(hit.text);
      return store.narinfoText(hash).then(
        (text) =>
          // Nix reads any 404 as "not in this cache"; other statuses would disable the substituter.
          text === null
            ? reply.code(404).type('text/plain').send('not found\n')
            : reply.type('text/x-nix-narinfo').send(text),
        (err) => sendCacheError(reply, err),
      );
    },
  );

  app.get<{ Params: { file: string } }>(
    '/cache/nar/:file',
    { onRequest: guard('read'), config: { access: 'cache-read' } },
    async (req, reply) => {
      try {
        const nar = await store.getNar(req.params.file);
        if (!nar) return reply.code(404).type('text/plain').send('not found\n');
        reply
          .header('content-length', nar.size)
          .header('cache-control', 'public, max-age=31536000, immutable');
        return reply.type('application/x-nix-nar').send(nar.stream);
      } catch (err) {
        return sendCacheError(reply, err);
      }
    },
  );

  app.get('/api/cache/key', { onRequest: guard('read'), config: { access: 'cache-read' } }, async () => ({
    data: { name: store.key.name, public_key: store.key.publicKey },
  }));

  app.post(
    '/api/cache/missing',
    { onRequest: guard('write'), config: { access: 'push' }, bodyLimit: 4 * 1024 * 1024 },
    async (req, reply) => {
      const parsed = MissingBody.safeParse(req.body);
      if (!parsed.success) {
        return reply.code(400).send({
          error: {
            code: 'CACHE_BAD_REQUEST',
            message: `the body must be {"paths": [store paths…]}: ${parsed.error.issues
              .map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`)
              .join('; ')}`,
          },
        });
      }
      try {
        return { data: { missing: await store.missing(parsed.data.paths) } };
      } catch (err) {
        return sendCacheError(reply, err);
      }
    },
  );

  // A wildcard, not `:name`: store path names run to 244 characters, past fastify's maxParamLength.
  app.put<{ Params: { '*': string }; Querystring: Record<string, string | undefined> }>(
    '/api/cache/nar/*',
    { onRequest: guard('write'), config: { access: 'push' }, bodyLimit: maxNarBytes },
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
        const claimPath = opts.claimPath;
        const result = await store.put(
          req.params['*'],
          claim,
          body,
          claimPath && ((path, narHash) => claimPath({ path, narHash, pushedBy })),
        );
        if (result.created) {
          await opts.onStored?.({ path: result.info.storePath, narHash: result.info.narHash, pushedBy });
        }
        if (!result.created) {
          reply.header('connection', 'close');
          body.resume();
        }
        const { info } = result;
        return reply.code(result.created ? 201 : 200).send({
          data: {
            path: info.storePath,
            created: result.created,
            nar_hash: info.narHash,
            nar_size: info.narSize,
            file_size: info.fileSize,
          },
        });
      } catch (err) {
        if (body && !body.readableEnded) reply.header('connection', 'close');
        if (err instanceof CacheError && err.code === 'CACHE_PATH_CONFLICT') {
          req.log.warn(
            { path: req.params['*'], by: opts.pusherOf?.(req) ?? 'anonymous', ip: req.ip },
            'refused a second, different upload of a cached path (possible cache poisoning)',
          );
        }
        return sendCacheError(reply, err);
      }
    },
  );
}
