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
    reply.status(404).send({ error: { code: 'NOT_FOUND', message: noRoute(req.method, req.url) } }),
  );
}

/**
 * samrose/mxc's routes that mxc has no route for, and what its users do instead (matched on the
 * method and the path; the answer stays 404 NOT_FOUND).
 */
const SEED_ROUTES: { method: RegExp; path: RegExp; instead: string }[] = [
  {
    method: /^POST$/,
    path: /^\/api\/nodes\/?$/,
    instead:
      "nodes are not registered through the API (samrose/mxc's POST /api/nodes): a node joins when its agent starts, `mxc agent --coordinator URL --token-file FILE` (services.mxc.agent on NixOS)",
  },
  {
    method: /^(PUT|PATCH)$/,
    path: /^\/api\/nodes\/[^/]+\/?$/,
    instead:
      "a node's status changes with POST /api/nodes/:id/drain and /undrain (`mxc nodes drain ID [--undo]`); its resources and attributes are what its agent offers (`mxc agent --cpu N --memory MiB --attr k=v`)",
  },
  {
    method: /./,
    path: /^\/api\/rules(\/|$)/,
    instead:
      'mxc has no scheduling-rule objects (samrose/mxc\'s /api/rules): placement follows each job\'s constraints (Job { constraints = { rack = "a1"; }; }, matched against `mxc agent --attr rack=a1`) and MXC_SCHEDULER_STRATEGY (spread or pack)',
  },
];

/** The 404 message for a request no route takes: which, and for samrose/mxc's routes what to do instead. */
export function noRoute(method: string, url: string): string {
  const path = url.split('?')[0]!;
  const seed = SEED_ROUTES.find((r) => r.method.test(method) && r.path.test(path));
  return `no route ${method} ${path}${seed ? `; ${seed.instead}` : ''}`;
}
