/**
 * The one error handler: coded JSON for every error; 4xx messages go to the client, 5xx details only to
 * the log (a response refused by its own schema is one of those). An unexpected error answers the coded
 * INTERNAL with a generic message and the request id; the log line under that id has the real message,
 * its causes and the stack. A coded 5xx (NOT_LEADER) keeps its message, written for clients. A database
 * that cannot be reached is a coded 503 DATABASE_UNAVAILABLE (retry), logged once in a while, not once a
 * request.
 */
import type { FastifyError, FastifyInstance } from 'fastify';
import { loggedUrl, MxcError } from '../errors.js';
import { isDatabaseUnavailable } from '../store/db.js';

/** While the database stays unreachable, requests refused for it are logged at most this often. */
const UNAVAILABLE_LOG_MS = 10_000;

export function installErrorHandler(app: FastifyInstance): void {
  let unavailableLoggedAt = Number.NEGATIVE_INFINITY;
  let refusedUnlogged = 0;
  app.setErrorHandler((err: FastifyError | MxcError | Error, req, reply) => {
    // The client went away mid-request (its body cut short: "aborted", ECONNRESET): nobody to answer,
    // and no database outage to report, whatever the error's code says.
    // (Not req.raw.destroyed: a request whose body was read whole is destroyed too.)
    if ((req.raw as { aborted?: boolean }).aborted || req.raw.socket?.destroyed) {
      req.log.debug(
        { err: (err as Error).message, url: loggedUrl(req.url) },
        'the client left before its answer',
      );
      return reply.status(400).send({ error: { code: 'CLIENT_GONE', message: 'the client left' } });
    }
    if (!(err instanceof MxcError) && isDatabaseUnavailable(err)) {
      const now = performance.now();
      if (now - unavailableLoggedAt >= UNAVAILABLE_LOG_MS) {
        req.log.warn(
          { err: (err as Error).message, url: loggedUrl(req.url), refused: refusedUnlogged + 1 },
          'the database is unreachable; requests that need it are answered 503 until it is back',
        );
        unavailableLoggedAt = now;
        refusedUnlogged = 0;
      } else refusedUnlogged++;
      return reply
        .status(503)
        .header('retry-after', '1')
        .send({
          error: {
            code: 'DATABASE_UNAVAILABLE',
            message: 'the coordinator cannot reach its database right now; retry shortly',
          },
        });
    }
    if (err instanceof MxcError) {
      if (err.status >= 500) req.log.error({ err, url: loggedUrl(req.url) }, err.message);
      return reply
        .status(err.status)
        .send({ error: { code: err.code, message: err.message, details: err.details } });
    }
    const fe = err as FastifyError;
    const status = fe.statusCode ?? 500;
    if (status < 500) {
      const code =
        fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
          ? 'BODY_TOO_LARGE'
          : fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
            ? 'UNSUPPORTED_MEDIA_TYPE'
            : status === 400
              ? 'BAD_REQUEST'
              : (fe.code ?? 'BAD_REQUEST');
      const message =
        code === 'BODY_TOO_LARGE'
          ? `request body is larger than the limit of ${app.initialConfig.bodyLimit} bytes`
          : fe.message.startsWith('Body is not valid JSON') || fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY'
            ? `request body is not valid JSON: ${fe.message}`
            : fe.message;
      return reply.status(status).send({ error: { code, message } });
    }
    if (fe.code === 'FST_ERR_RESPONSE_SERIALIZATION') {
      // The handler answered something its declared response schema refuses: a bug on our side,
      // never sent half-checked to the client.
      const issues = (err.cause as { issues?: unknown } | undefined)?.issues;
      req.log.error({ err, issues, url: loggedUrl(req.url) }, 'response does not match its schema');
    } else req.log.error({ err, url: loggedUrl(req.url) }, 'internal error');
    return reply.status(500).send({
      error: {
        code: 'INTERNAL',
        message: `internal error; the coordinator log has the details (request id ${req.id})`,
        details: { request_id: req.id },
      },
    });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.status(404).send({
      error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` },
    }),
  );
}
