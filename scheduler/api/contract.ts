/**
 * The API contract, enforced: every route declares zod schemas (params, query, body, responses) through
 * fastify-type-provider-zod; requests are validated and responses serialised through those schemas; the
 * OpenAPI document is generated from them by @fastify/swagger. A route under /api/ (or /healthz, /metrics)
 * registered without a response schema, or with path parameters but no params schema, fails at start.
 */
import swagger from '@fastify/swagger';
import type { FastifyInstance, FastifySchema, RouteOptions } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { type ZodType, z } from 'zod';
import { ApiError } from '../../spec/api.js';
import { describeIssues } from '../../spec/job.js';
import { errors } from '../errors.js';

/** The app with the zod type provider: handlers are typed by their schemas. */
export const typed = (app: FastifyInstance) => app.withTypeProvider<ZodTypeProvider>();

/** The JSON of a successful answer: `{ "data": … }`. */
export const data = <T extends ZodType>(s: T) => z.object({ data: s });

/** Coded errors, as the one error handler sends them. */
export const errorResponses = { '4XX': ApiError, '5XX': ApiError } as const;

/**
 * `{ id }` path parameters: an id, a name, or a job key (four names of up to 128 characters and their
 * slashes, 515).
 */
export const IdParams = z.object({ id: z.string().min(1).max(515) });

const PART_NAMES: Record<string, string> = {
  body: 'request body',
  querystring: 'query',
  params: 'path parameters',
  headers: 'headers',
};

/**
 * Routes of the JSON API (the cache's upload side included); the others serve other protocols: the
 * dashboard's pages and the Nix binary cache's read side (`/cache/…`, Nix's own text formats).
 */
export function isJsonApiRoute(url: string): boolean {
  return url.startsWith('/api/') || url === '/healthz' || url === '/metrics';
}

/** The routes the app registered, as fastify saw them (for the contract test). */
export interface RouteRecord {
  method: string;
  url: string;
  schema?: FastifySchema;
}

declare module 'fastify' {
  interface FastifyInstance {
    routeTable: RouteRecord[];
  }
}

/**
 * Installs validation (coded VALIDATION_FAILED 422 naming each JSON path, like every other validation
 * error of the API), response serialisation through zod, and the OpenAPI generator. Call before any route.
 */
export async function installContract(app: FastifyInstance, version: string): Promise<void> {
  // Our own validator (not the provider's) so that problems read like every other VALIDATION_FAILED:
  // "path.to.field: message", with the coded error thrown straight to the error handler.
  app.setValidatorCompiler(({ schema, httpPart }) => (value: unknown) => {
    const r = (schema as unknown as ZodType).safeParse(value);
    if (r.success) return { value: r.data };
    return { error: errors.validation(PART_NAMES[httpPart ?? 'body'] ?? 'request', describeIssues(r.error)) };
  });
  app.setSerializerCompiler(serializerCompiler);

  const table: RouteRecord[] = [];
  app.decorate('routeTable', table);
  app.addHook('onRoute', (route: RouteOptions) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) table.push({ method, url: route.url, schema: route.schema });
    if (!isJsonApiRoute(route.url)) return;
    const schema = route.schema as (FastifySchema & { response?: Record<string, unknown> }) | undefined;
    const where = `${methods.join(',')} ${route.url}`;
    if (!schema?.response || Object.keys(schema.response).length === 0)
      throw new Error(`route ${where} declares no response schema (scheduler/api/contract.ts)`);
    if (route.url.includes(':') && !schema.params)
      throw new Error(`route ${where} has path parameters but no params schema`);
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'mxc coordinator API',
        version,
        description:
          'Generated from the zod schemas each route declares. Answers are `{"data": …}`; errors `{"error": {code, message, details}}`.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });
}

/**
 * @fastify/websocket hides its routes from the OpenAPI document; the agent socket is part of the API, so
 * it stays documented (its upgrade request's query and answers). Call after registering the websocket plugin.
 */
export function documentWebSockets(app: FastifyInstance): void {
  app.addHook('onRoute', (route: RouteOptions & { websocket?: boolean }) => {
    if (route.websocket && route.schema) delete (route.schema as { hide?: boolean }).hide;
  });
}

/** Page cursors are opaque to clients: the last key of the page (a node's name, a job's key), base64url. */
export const encodeCursor = (key: string) => Buffer.from(key, 'utf8').toString('base64url');

/** The key a cursor names; a cursor this API did not give is a coded 400. */
export function decodeCursor(cursor: string, shape?: RegExp): string {
  const key = Buffer.from(cursor, 'base64url').toString('utf8');
  // Names and keys hold no control characters (a NUL reached PostgreSQL and came back a 500).
  if (
    !key ||
    encodeCursor(key) !== cursor ||
    /[\u0000-\u001f\u007f]/.test(key) ||
    (shape && !shape.test(key))
  )
    throw errors.badRequest('cursor is not one this API gave; start again without it');
  return key;
}
