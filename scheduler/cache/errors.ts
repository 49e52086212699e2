/**
 * Coded errors of the binary cache: a stable code, an HTTP status and a message saying what to do,
 * sent as `{ error: { code, message } }` like every other API error.
 */
import type { FastifyReply } from 'fastify';
import { loggedUrl } from '../errors.js';

export type CacheErrorCode =
  | 'CACHE_UNAUTHORIZED'
  | 'CACHE_BAD_REQUEST'
  | 'CACHE_INVALID_PATH'
  | 'CACHE_HASH_MISMATCH'
  | 'CACHE_SIZE_MISMATCH'
  | 'CACHE_NOT_A_NAR'
  | 'CACHE_PATH_CONFLICT'
  | 'CACHE_TOO_LARGE'
  | 'CACHE_MISSING_REFERENCES'
  | 'CACHE_UNSUPPORTED_MEDIA_TYPE'
  | 'CACHE_UPLOAD_ABORTED'
  | 'CACHE_KEY_INVALID'
  | 'CACHE_KEY_NAME_INVALID'
  | 'CACHE_KEY_NAME_MISMATCH'
  | 'CACHE_STORAGE_UNAVAILABLE'
  | 'CACHE_STORAGE_INVALID'
  | 'CACHE_STORAGE_CORRUPT';

export class CacheError extends Error {
  constructor(
    readonly code: CacheErrorCode,
    readonly statusCode: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CacheError';
  }
}

/**
 * Sends a CacheError as JSON; anything else is rethrown for the app's error handler (logged as 5xx). A 5xx
 * keeps its code but not its message (bucket, endpoint, directory, the storage's own error): that goes to
 * the log under the request id the answer names, as with every other 5xx of the API.
 */
export function sendCacheError(reply: FastifyReply, err: unknown): FastifyReply {
  if (!(err instanceof CacheError)) throw err;
  if (err.statusCode >= 500) {
    const id = reply.request.id;
    reply.log.error({ err, url: loggedUrl(reply.request.url) }, err.message);
    return reply.code(err.statusCode).send({
      error: {
        code: err.code,
        message: `the cache's storage failed; the coordinator log has the details (request id ${id})`,
        details: { request_id: id },
      },
    });
  }
  return reply.code(err.statusCode).send({ error: { code: err.code, message: err.message } });
}
