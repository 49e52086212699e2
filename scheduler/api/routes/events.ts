/** `/api/events`: server-sent events of every change (workloads, nodes, jobs, logs), for live views. */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import * as api from '../../../spec/api.js';
import type { ChangeEvent, Coordinator } from '../../coordinator.js';
import { errorResponses, typed } from '../contract.js';

export async function eventRoutes(app: FastifyInstance, { coordinator }: { coordinator: Coordinator }) {
  typed(app).get(
    '/api/events',
    {
      schema: {
        summary: 'Server-sent events: one `data:` line of JSON ({kind, id, status?}) per change',
        tags: ['events'],
        querystring: api.TokenQuery,
        response: {
          200: {
            description: 'an event stream until the client leaves',
            content: { 'text/event-stream': { schema: z.string() } },
          },
          ...errorResponses,
        },
      },
    },
    async (req, reply) => {
      reply.raw.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
      });
      reply.raw.write(': connected\n\n');
      // Written past fastify's serialiser: each event goes through its schema by hand.
      const onChange = (e: ChangeEvent) =>
        reply.raw.write(`data: ${JSON.stringify(api.ChangeEvent.parse(e))}\n\n`);
      const ping = setInterval(() => reply.raw.write(': ping\n\n'), 15_000);
      coordinator.events.on('change', onChange);
      req.raw.on('close', () => {
        clearInterval(ping);
        coordinator.events.off('change', onChange);
      });
      return reply;
    },
  );
}
