/**
 * The web dashboard, served by the coordinator: the HTML shell at `/` and the static browser files
 * of `scheduler/ui/assets/` under `/ui/`. The shell holds no data; every datum comes from the token-checked API.
 */
import type { FastifyInstance } from 'fastify';
import { repoPath } from '../paths.js';
import { loadAssets } from './assets.js';

/** Pages are rendered in the browser; this only narrows what they may load (no inline scripts, no CDNs). */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

export async function dashboardPlugin(app: FastifyInstance): Promise<void> {
  // Read once at start: a fixed set of files, so a request path can never reach outside the folder.
  const assets = await loadAssets(repoPath('scheduler', 'ui', 'assets'));
  const shell = assets.get('index.html');
  if (!shell) throw new Error('mxc: dashboard assets are missing scheduler/ui/assets/index.html');

  app.get('/', { config: { access: 'public' } }, async (_req, reply) =>
    reply.headers(SECURITY_HEADERS).header('cache-control', 'no-cache').type(shell.type).send(shell.body),
  );

  app.get<{ Params: { '*': string } }>('/ui/*', { config: { access: 'public' } }, async (req, reply) => {
    const file = assets.get(req.params['*']);
    if (!file)
      return reply.code(404).send({
        error: { code: 'NOT_FOUND', message: `no dashboard file "${req.params['*']}"; open / instead` },
      });
    // no-cache + ETag: browsers revalidate, so a coordinator upgrade never serves stale scripts.
    if (req.headers['if-none-match'] === file.etag) return reply.code(304).send();
    return reply
      .headers(SECURITY_HEADERS)
      .header('cache-control', 'no-cache')
      .header('etag', file.etag)
      .type(file.type)
      .send(file.body);
  });
}
