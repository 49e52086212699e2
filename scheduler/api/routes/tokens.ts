/**
 * `/api/tokens`: create (the token is shown once), list (names, kinds and scopes only), revoke. In open
 * mode the first token can be made only from the coordinator's own machine (loopback).
 */
import { isIP } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { describeIssues } from '../../../spec/job.js';
import { errors, MxcError } from '../../errors.js';
import type { Queryable } from '../../store/db.js';
import * as tokensTable from '../../store/tokens.js';
import { type Auth, SCOPES } from '../auth.js';

const CreateToken = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'names are 1-64 letters, digits, _ . -'),
    kind: z.enum(['client', 'agent']),
    /** Client tokens only; default admin (what every token could do before scopes). */
    scope: z.enum(SCOPES).optional(),
  })
  .strict();

export async function tokenRoutes(app: FastifyInstance, opts: { auth: Auth; db: Queryable }) {
  app.post('/api/tokens', { config: { access: 'admin' } }, async (req, reply) => {
    const r = CreateToken.safeParse(req.body);
    if (!r.success) throw errors.validation('token request', describeIssues(r.error));
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
  app.get('/api/tokens', { config: { access: 'admin' } }, async () => {
    const rows = await tokensTable.listTokens(opts.db);
    return { data: rows.map(({ token_hash: _h, ...t }) => t) };
  });
  app.delete<{ Params: { name: string } }>(
    '/api/tokens/:name',
    { config: { access: 'admin' } },
    async (req, reply) => {
      await opts.auth.revoke(req.params.name);
      return reply.status(204).send();
    },
  );
}

function isLoopback(addr: string | undefined): boolean {
  if (!addr) return false;
  const v4 = addr.startsWith('::ffff:') ? addr.slice(7) : addr;
  return addr === '::1' || (isIP(v4) === 4 && v4.startsWith('127.'));
}
