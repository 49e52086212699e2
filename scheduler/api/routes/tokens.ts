/** `/api/tokens`: create (the token is shown once), list (names and kinds only), revoke. */

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { describeIssues } from '../../../spec/job.js';
import { errors } from '../../errors.js';
import type { Queryable } from '../../store/db.js';
import * as tokensTable from '../../store/tokens.js';
import type { Auth } from '../auth.js';

const CreateToken = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'names are 1-64 letters, digits, _ . -'),
    kind: z.enum(['client', 'agent']),
  })
  .strict();

export async function tokenRoutes(app: FastifyInstance, opts: { auth: Auth; db: Queryable }) {
  app.post('/api/tokens', async (req, reply) => {
    const r = CreateToken.safeParse(req.body);
    if (!r.success) throw errors.validation('token request', describeIssues(r.error));
    return reply.status(201).send({ data: await opts.auth.create(r.data.name, r.data.kind) });
  });
  app.get('/api/tokens', async () => {
    const rows = await tokensTable.listTokens(opts.db);
    return { data: rows.map(({ token_hash: _h, ...t }) => t) };
  });
  app.delete<{ Params: { name: string } }>('/api/tokens/:name', async (req, reply) => {
    await opts.auth.revoke(req.params.name);
    return reply.status(204).send();
  });
}
