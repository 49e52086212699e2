/**
 * `/api/tokens`: create (the token is shown once), list (names, kinds and scopes only), revoke. In open
 * mode the first token can be made only from the coordinator's own machine (loopback).
 */
import { isIP } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import * as api from '../../../spec/api.js';
import { errors, MxcError } from '../../errors.js';
import type { Queryable } from '../../store/db.js';
import * as tokensTable from '../../store/tokens.js';
import type { Auth } from '../auth.js';
import { data, errorResponses, typed } from '../contract.js';

const tags = ['tokens'];

export async function tokenRoutes(app: FastifyInstance, opts: { auth: Auth; db: Queryable }) {
  const t = typed(app);
  const schema = {
    summary: 'Create a named token (returned once; only its digest is kept)',
    tags,
    body: api.CreateToken,
    response: { 201: data(api.CreatedToken), ...errorResponses },
  };
  t.post('/api/tokens', { schema, config: { access: 'admin' } }, async (req, reply) => {
    const r = { data: req.body };
    if (r.data.kind === 'agent' && r.data.scope !== undefined)
      throw errors.badRequest('agent tokens have no scope: they join agents and read the cache');
    if (req.principal?.kind === 'anonymous' && !isLoopback(req.socket.remoteAddress)) {
      throw new MxcError(
        'BOOTSTRAP_LOOPBACK_ONLY',
        403,
        'this coordinator has no client token yet; create the first one from the coordinator machine itself (mxc tokens create … against 127.0.0.1), or start it with MXC_API_TOKEN',
      );
    }
    return reply.status(201).send({ data: await opts.auth.create(r.data.name, r.data.kind, r.data.scope) });
  });
  const listSchema = {
    summary: 'Token names, kinds and scopes',
    tags,
    response: { 200: data(z.array(api.Token)), ...errorResponses },
  };
  t.get('/api/tokens', { schema: listSchema, config: { access: 'admin' } }, async () => {
    const rows = await tokensTable.listTokens(opts.db);
    return { data: rows.map(({ token_hash: _h, ...t }) => t) };
  });
  t.delete(
    '/api/tokens/:name',
    {
      schema: {
        summary: 'Revoke a token (its open streams end)',
        tags,
        params: z.object({ name: z.string().min(1).max(64) }),
        response: { 204: z.null().describe('revoked'), ...errorResponses },
      },
      config: { access: 'admin' },
    },
    async (req, reply) => {
      await opts.auth.revoke(req.params.name);
      return reply.status(204).send(null);
    },
  );
}

function isLoopback(addr: string | undefined): boolean {
  if (!addr) return false;
  const v4 = addr.startsWith('::ffff:') ? addr.slice(7) : addr;
  return addr === '::1' || (isIP(v4) === 4 && v4.startsWith('127.'));
}
