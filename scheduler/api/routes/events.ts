/**
 * `/api/events`: server-sent events of every change (workloads, nodes, jobs, logs), for live views. A
 * subscriber that leaves more than EVENTS_UNREAD_MAX bytes unread is dropped rather than buffered for.
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import * as api from '../../../spec/api.js';
import type { ChangeEvent, Coordinator } from '../../coordinator.js';
import { errorResponses, typed } from '../contract.js';
import type { StreamSlots } from '../stream-slots.js';

/**
 * Bytes of events a subscriber may leave unread (beyond what the socket took) before it is dropped: a
 * stalled client (a laptop asleep, or one that never reads) would otherwise hold every change since in
 * the coordinator's memory. An EventSource reconnects by itself, and the dashboard then reads the state
 * afresh, as after any reconnect.
 */
export const EVENTS_UNREAD_MAX = 4 * 1024 * 1024;

export async function eventRoutes(
  app: FastifyInstance,
  { coordinator, streams }: { coordinator: Coordinator; streams: StreamSlots },
) {
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
      streams.take(req, reply.raw);
      reply.raw.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
      });
      const send = (text: string) => {
        if (reply.raw.writableLength <= EVENTS_UNREAD_MAX) reply.raw.write(text);
        else if (!reply.raw.destroyed) {
          req.log.warn(
            { unread: reply.raw.writableLength },
            'dropped an event subscriber that stopped reading; it may reconnect',
          );
          reply.raw.destroy();
        }
      };
      send(': connected\n\n');
      // Written past fastify's serialiser: each event goes through its schema by hand.
      const onChange = (e: ChangeEvent) => send(`data: ${JSON.stringify(api.ChangeEvent.parse(e))}\n\n`);
      const ping = setInterval(() => send(': ping\n\n'), 15_000);
      coordinator.events.on('change', onChange);
      req.raw.on('close', () => {
        clearInterval(ping);
        coordinator.events.off('change', onChange);
      });
      return reply;
    },
  );
}
