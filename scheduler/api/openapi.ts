/** `/api/openapi.json`: the OpenAPI 3.1 document @fastify/swagger generates from every route's zod schemas. */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { errorResponses, typed } from './contract.js';

export async function openApiRoutes(app: FastifyInstance) {
  typed(app).get(
    '/api/openapi.json',
    {
      schema: {
        summary: 'This document',
        tags: ['meta'],
        security: [],
        response: {
          200: z.record(z.string(), z.unknown()).describe('an OpenAPI 3.1 document'),
          ...errorResponses,
        },
      },
      config: { access: 'public' },
    },
    // Generated once, on first request, after every plugin has registered its routes.
    async () => app.swagger() as unknown as Record<string, unknown>,
  );
}
